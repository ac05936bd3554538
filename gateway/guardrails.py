"""Canary guardrails: the configured rules compare the canary with the primary over the same time (error rate, P99
ratio, click-through at k, each once the sample is big enough), over the counts of every gateway replica, and a breach
rolls the canary back in the registry, once."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from catalog import Store
from catalog.registry import Family, Guardrails, Registry
from gateway.online import OnlineMetrics, Tally
from mesh.logging import get_logger

__all__ = ["Breach", "breach", "GuardrailWatch"]

Z_ONE_SIDED = 2.33  # a click-through drop must also be significant at about 1%: a healthy canary's noise is not a breach


@dataclass(frozen=True)
class Breach:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"guardrail {self.rule} breached: {self.detail}"


def _ctr_z(canary: Tally, primary: Tally) -> float:
    """Two-proportion z statistic of the canary's click-through against the primary's (negative: lower)."""
    n1, n2 = canary.impressions, primary.impressions
    pooled = (canary.clicks_at_k + primary.clicks_at_k) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return (canary.ctr_at_k - primary.ctr_at_k) / spread if spread > 0 else 0.0


def breach(rules: Guardrails, canary: Tally, primary: Tally) -> Breach | None:
    """The first rule the canary breaks against the primary, or None. Each rule judges only with enough sample."""
    routed = canary.feeds + canary.errors
    if routed >= rules.min_feeds and canary.errors / routed > rules.max_error_rate:
        return Breach("max_error_rate", f"{canary.errors} of {routed} feeds failed "
                                        f"({canary.errors / routed:.1%} > {rules.max_error_rate:.1%})")
    enough = len(canary.latencies_ms) >= rules.min_feeds and len(primary.latencies_ms) >= rules.min_feeds
    if enough and primary.p99_ms > 0 and canary.p99_ms / primary.p99_ms > rules.max_p99_ratio:
        return Breach("max_p99_ratio", f"P99 {canary.p99_ms:.1f} ms against the primary's {primary.p99_ms:.1f} ms "
                                       f"(x{canary.p99_ms / primary.p99_ms:.2f} > x{rules.max_p99_ratio:g})")
    if canary.feeds >= rules.min_feeds and primary.feeds >= rules.min_feeds and primary.ctr_at_k > 0:
        ratio = canary.ctr_at_k / primary.ctr_at_k
        z = _ctr_z(canary, primary)
        if ratio < rules.min_ctr_ratio and z < -Z_ONE_SIDED:
            return Breach("min_ctr_ratio", f"click-through at k {canary.ctr_at_k:.4f} against the primary's "
                                           f"{primary.ctr_at_k:.4f} (x{ratio:.2f} < x{rules.min_ctr_ratio:g}, "
                                           f"z {z:.1f}, {canary.feeds} and {primary.feeds} feeds)")
    return None


class GuardrailWatch:
    """Checks the family's canary against its rules, on the trial's counts summed over every gateway replica
    (gateway/rollout.py publishes them); on a breach, writes the rollback into the registry (with the
    reason, which `feedserve models list` and the dashboard show) and remembers it. A canary already rolled back by
    the time the registry is written (by another gateway, or an operator) is left alone: one rollback, one record."""

    def __init__(self, store: Store, metrics: OnlineMetrics) -> None:
        self.store, self.metrics = store, metrics
        self.rollbacks: list[dict] = []  # {"at", "family", "version", "why"}
        self.log = get_logger("gateway")

    def check(self, family: Family, trial: dict[str, Tally] | None = None) -> Breach | None:
        """`trial`: each version's counts since the canary began (default: this gateway's own)."""
        canary, primary = family.canary, family.primary
        if canary is None or primary is None:
            return None
        trial = self.metrics.trial if trial is None else trial
        found = breach(family.guardrails, trial.get(f"{family.name}/{canary}", Tally()),
                       trial.get(f"{family.name}/{primary}", Tally()))
        if found is None:
            return None

        rolled: list[bool] = []

        def roll_back(registry: Registry) -> None:
            current = registry.family(family.name)
            # unless an operator, or another gateway judging the same canary, changed it meanwhile: one rollback
            if current.canary == canary:
                current.rollback(time.time(), str(found))
                rolled.append(True)

        self.store.change_registry(roll_back)
        if not rolled:
            return None
        self.rollbacks.append({"at": time.time(), "family": family.name, "version": canary, "why": str(found)})
        self.log.warning("canary rolled back", family=family.name, version=canary, why=str(found))
        return found
