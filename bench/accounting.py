"""How the load benchmark counts answers: only a full feed is served. A degraded answer (a fallback, a cached or
smaller feed), a refusal and an error are counted apart, and never enter the served rate or its latencies."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mesh.percentiles import p50_p99

__all__ = ["FULL", "DEGRADED", "Tally", "outcome_of"]

FULL, DEGRADED = "full", "degraded"


def outcome_of(degraded: bool | None, status: str | None = None) -> str:
    """FULL or DEGRADED for an answer (`degraded` as the reply says), else the gRPC status name of the failure."""
    if status is not None:
        return status
    return DEGRADED if degraded else FULL


@dataclass
class Tally:
    """The answers to one block of offered load: latencies of full answers only, every outcome counted."""

    seconds: float = 0.0  # how long the block offered load
    full_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    late_ms: list[float] = field(default_factory=list)  # how late the driver sent each request: its own lag

    def record(self, outcome: str, latency_ms: float, late_ms: float = 0.0) -> None:
        self.outcomes[outcome] += 1
        self.late_ms.append(late_ms)
        if outcome == FULL:
            self.full_ms.append(latency_ms)

    def merge(self, other: Tally) -> None:
        self.seconds += other.seconds
        self.full_ms += other.full_ms
        self.outcomes.update(other.outcomes)
        self.late_ms += other.late_ms

    @property
    def answered(self) -> int:
        """Every request sent, whatever came back."""
        return sum(self.outcomes.values())

    @property
    def served(self) -> int:
        """Full feeds only."""
        return self.outcomes[FULL]

    @property
    def degraded_share(self) -> float:
        """The share of requests that did not get a full feed (degraded, refused or failed)."""
        return 1 - self.served / self.answered if self.answered else 0.0

    @property
    def served_rps(self) -> float:
        return self.served / self.seconds if self.seconds else 0.0

    def percentiles(self) -> tuple[float, float]:
        """P50 and P99 of full answers, in ms (nan when there were none)."""
        return p50_p99(self.full_ms) if self.full_ms else (float("nan"), float("nan"))

    def sustained(self, p99_limit_ms: float = 50.0, min_full_share: float = 0.99) -> bool:
        """This block's rate is sustained: at least `min_full_share` of answers full, and their P99 within the limit."""
        if not self.answered or self.served < min_full_share * self.answered:
            return False
        return self.percentiles()[1] <= p99_limit_ms
