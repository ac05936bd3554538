"""The gateway's side of model routing: it follows the model registry in the store (which version answers each
user), publishes its online counts to the store and judges the canary's guardrails on every replica's counts, and
carries out the operators' changes (`feedserve models ...`) in the registry."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from catalog import Store
from catalog.feed import RegistryWatcher
from catalog.registry import Family, Registry
from engines.base import load_manifest, verify_files
from errors import FeedserveError, InvalidArgument
from feedserve.v1 import gateway_pb2, ranker_pb2
from gateway.guardrails import Breach, GuardrailWatch
from gateway.online import OnlineMetrics, Tally, summed
from mesh.clients import RankerClient
from mesh.logging import get_logger

__all__ = ["GatewayRouting", "RANKER_FAMILY"]

RANKER_FAMILY = "ranker-mlp"
TOTAL = "total"  # the scope of the counts since each replica started (a trial's scope names its canary)
PUBLISH_S = 1.0  # how often a replica's counts reach the store


class GatewayRouting:
    """The ranker family's routing as last read, the guardrail watch over its canary, and the admin changes."""

    def __init__(self, store: Store, metrics: OnlineMetrics, ranker: RankerClient | None = None,
                 family: str = RANKER_FAMILY) -> None:
        self.metrics, self.ranker, self.store, self.name = metrics, ranker, store, family
        self.family: Family | None = None
        self.replica = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"  # its rows in online_counts
        self.trial_scope = ""  # the current canary's trial, as every replica names it ("": no canary)
        self._published = 0.0
        self.guardrails = GuardrailWatch(store, metrics)
        self.watcher = RegistryWatcher(store, self._on_change)
        self.log = get_logger("gateway")

    def _on_change(self, registry: Registry) -> None:
        family = registry.families.get(self.name)
        canary = family.canary if family is not None else None
        scope = f"trial {self.name}/{canary} since {family.canary_since!r}" if family is not None and canary else ""
        if scope != self.trial_scope:  # a new canary, or none: its comparison with the primary starts from nothing
            self.metrics.start_trial()
            self.trial_scope = scope
            self.store.forget_counts([TOTAL, self.trial_scope])  # the trials that ended
        self.family = family

    def version_for(self, user_id: int) -> str:
        """The version that should answer this user ("" when the registry names none: the ranker's primary)."""
        family = self.family
        return (family.route(user_id) or "") if family is not None else ""

    def publish(self) -> None:
        """This replica's counts to the store: its totals, and the current trial's."""
        self.store.publish_counts(TOTAL, self.replica, [t.to_row(v) for v, t in list(self.metrics.totals.items())],
                                  time.time())
        if self.trial_scope:
            self.store.publish_counts(self.trial_scope, self.replica,
                                      [t.to_row(v) for v, t in list(self.metrics.trial.items())], time.time())

    def trial_counts(self) -> dict[str, Tally]:
        """Each version's counts since the canary began, summed over every replica that published them."""
        return summed(self.store.counts_of(self.trial_scope)) if self.trial_scope else {}

    def tick(self) -> Breach | None:
        """Follow the registry, publish the counts (every PUBLISH_S), and judge the canary on every replica's."""
        self.watcher.check()
        # its own clock: a listing publishes too, and must not hold the guardrails back (an operator polling
        # `feedserve models list` would keep a bad canary serving)
        if time.monotonic() - self._published < PUBLISH_S:
            return None
        self._published = time.monotonic()
        self.publish()
        family = self.family
        if family is None or family.canary is None:
            return None
        found = self.guardrails.check(family, self.trial_counts())
        if found is not None:
            self.watcher.check()
        return found

    async def watch(self, every_s: float = 0.2) -> None:
        """`tick` every `every_s`, on a worker thread (the store is never read on the event loop)."""
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except FeedserveError as exc:
                self.log.warning("routing not read", error=str(exc))
            await asyncio.sleep(every_s)  # a polling period, not synchronisation

    # operators' changes

    async def change(self, family: str, edit: Callable[[Family, float], object]) -> gateway_pb2.ModelList:
        """Apply `edit(family, now)` in one registry transaction, then answer with the family as it now stands."""
        if not family:
            raise InvalidArgument("family", "is required (e.g. ranker-mlp)")

        def apply(registry: Registry) -> None:
            edit(registry.family(family), time.time())

        await asyncio.to_thread(self.store.change_registry, apply)
        await asyncio.to_thread(self.watcher.check)
        return await self.describe(family)

    async def stage(self, directory: str) -> gateway_pb2.ModelList:
        if not directory:
            raise InvalidArgument("directory", "is required: a version directory holding manifest.json")
        path = Path(directory)
        try:
            manifest = load_manifest(path)
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidArgument("directory", f"{directory} holds no readable manifest.json: {exc}") from None
        name = manifest.name
        await asyncio.to_thread(verify_files, manifest)  # files that are not the version's: refused, named
        # its files by SHA-256 into the store (for services on any host), then staged; a ranker holds a table row
        # per catalog item, a generation tier none
        await asyncio.to_thread(self.store.register_version, path, "operator", name == self.name)
        await asyncio.to_thread(self.watcher.check)
        return await self.describe(name)

    async def describe(self, name: str = "") -> gateway_pb2.ModelList:
        """Every family (or one), each version with its state, offline and online metrics and last change; the
        ranker's shadow figures and what it could not load."""
        registry = await asyncio.to_thread(self.store.registry)
        names = [name] if name else sorted(registry.families)
        status = await self._ranker_status()
        await asyncio.to_thread(self.publish)  # this replica's latest counts beside every other's
        totals = summed(await asyncio.to_thread(self.store.counts_of, TOTAL))
        answer = gateway_pb2.ModelList()
        for family_name in names:
            family = registry.family(family_name)
            out = answer.families.add(name=family.name, canary_share=family.canary_share,
                                      shadow_share=family.shadow_share, memory_budget_bytes=family.memory_budget_bytes)
            for version in sorted(family.versions.values(), key=lambda v: int(v.version) if v.version.isdigit() else 0):
                change = version.last_change
                if status is not None and version.version in status.not_loaded and family.name == self.name:
                    change += f" [ranker: not loaded: {status.not_loaded[version.version]}]"
                out.versions.add(
                    version=version.version, state=version.state, offline_metrics=version.offline_metrics,
                    trained_to_sequence=version.trained_to_sequence, directory=version.directory,
                    footprint_bytes=version.footprint_bytes, last_change=change,
                    resident=status is not None and family.name == self.name
                    and any(m.version == version.version for m in status.models),
                    online=totals.get(f"{family.name}/{version.version}", Tally()).to_proto())
            if status is not None and family.name == self.name and status.shadow.compared:
                out.shadow.CopyFrom(status.shadow)
        return answer

    async def _ranker_status(self) -> ranker_pb2.ModelsStatus | None:
        if self.ranker is None:
            return None
        try:
            return await self.ranker.models(2.0)
        except FeedserveError:
            return None


