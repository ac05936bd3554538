"""The model registry: each model family's versions and their states (with the history of changes and their reasons),
the canary's share and salt, the shadow's sample, the guardrails and the memory budget, and the one rule for which
version answers a request (`Family.route`). Its rows live in the store (catalog/registry_rows.py) and reach every
service through the change feed (catalog/feed.py, RegistryWatcher)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

__all__ = ["STATES", "SERVING", "HISTORY", "Guardrails", "Version", "Family", "Registry", "in_canary",
           "legacy_routing_path", "model_cache", "footprint_bytes", "BYTES_PER_ITEM"]

STATES = ("staged", "shadow", "canary", "primary", "retired")
SERVING = ("primary", "canary", "shadow")  # the states a service keeps a version loaded for
DEFAULT_CANARY_SHARE = 0.1
DEFAULT_SHADOW_SHARE = 0.1
DEFAULT_BUDGET_BYTES = 4 << 30
BYTES_PER_ITEM = 4 * (512 + 128)  # a ranker version's item terms (first layer) and its light stage's units, float32
HISTORY = 50  # changes read back per version (the store keeps every one)


def model_cache(home: Path) -> Path:
    """Where a service keeps the versions it fetched from the store (catalog/artifacts.py)."""
    return home / "cache" / "models"


def legacy_routing_path(home: Path) -> Path:
    """Where releases before the registry moved into the store kept it: a JSON file beside the models
    (`feedserve up` imports it once)."""
    return home / "models" / "routing.json"


@dataclass
class Guardrails:
    """What a canary must keep, against the primary over the same time, before it may go on serving."""

    max_error_rate: float = 0.02  # failed feeds / feeds routed to it
    max_p99_ratio: float = 2.0  # its P99 latency / the primary's
    min_ctr_ratio: float = 0.8  # its click-through at k / the primary's
    min_feeds: int = 100  # the sample each side needs before the latency and online rules judge


@dataclass
class Version:
    """One registered version: where it is, what training measured, what it weighs, and its state's history."""

    version: str
    state: str
    directory: str
    offline_metrics: dict[str, float] = field(default_factory=dict)
    trained_to_sequence: int = 0
    footprint_bytes: int = 0
    space: int = 0  # a ranker's learned space: versions served side by side must share the served one
    history: list[dict[str, Any]] = field(default_factory=list)  # {"at", "from", "to", "why"}
    manifest: str = ""  # its manifest.json as staged: the files (by SHA-256) any host fetches from the store

    @property
    def last_change(self) -> str:
        if not self.history:
            return ""
        change = self.history[-1]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(change["at"]))
        return f"{when} {change['from']} -> {change['to']}: {change['why']}"


@dataclass
class Family:
    """A model family (`ranker-mlp`, a generation tier `small`): its versions and how traffic is split among them."""

    name: str
    versions: dict[str, Version] = field(default_factory=dict)
    canary_share: float = DEFAULT_CANARY_SHARE
    shadow_share: float = DEFAULT_SHADOW_SHARE
    salt: str = field(default_factory=lambda: secrets.token_hex(8))
    memory_budget_bytes: int = DEFAULT_BUDGET_BYTES
    guardrails: Guardrails = field(default_factory=Guardrails)
    canary_since: float = 0.0

    def holding(self, state: str) -> str | None:
        """The version in `state` (primary, canary and shadow have at most one)."""
        return next((v.version for v in self.versions.values() if v.state == state), None)

    @property
    def primary(self) -> str | None:
        return self.holding("primary")

    @property
    def canary(self) -> str | None:
        return self.holding("canary")

    @property
    def shadow(self) -> str | None:
        return self.holding("shadow")

    def route(self, user_id: int) -> str | None:
        """The version that answers this user: the canary for its sticky share of users, else the primary."""
        canary = self.canary
        if canary is not None and in_canary(self.salt, user_id, self.canary_share):
            return canary
        return self.primary

    def get(self, version: str) -> Version:
        if version not in self.versions:
            raise NotFound(f"version: {self.name} has no version {version!r} (it has {', '.join(self.versions) or 'none'})")
        return self.versions[version]

    def _move(self, version: str, state: str, why: str, now: float) -> None:
        entry = self.versions[version]
        if entry.state != state:
            entry.history = [*entry.history, {"at": now, "from": entry.state, "to": state, "why": why}][-HISTORY:]
            entry.state = state

    def _check_budget(self, adding: str) -> None:
        """Refuse a version whose loading would take the versions loaded side by side over the budget."""
        loaded = {v for v in (self.primary, self.canary, self.shadow) if v is not None} | {adding}
        need = sum(self.versions[v].footprint_bytes for v in loaded)
        if need > self.memory_budget_bytes:
            parts = ", ".join(f"{v} {self.versions[v].footprint_bytes / 2**20:.0f} MiB" for v in sorted(loaded))
            raise ResourceExhausted(f"{self.name}/{adding} does not fit: {parts} resident together need "
                                    f"{need / 2**20:.0f} MiB, over the memory budget of "
                                    f"{self.memory_budget_bytes / 2**20:.0f} MiB")

    def _check_space(self, version: str) -> None:
        primary = self.primary
        if primary is None:
            return
        ours, theirs = self.versions[version].space, self.versions[primary].space
        if ours != theirs:
            raise FailedPrecondition(
                f"{self.name}/{version} was trained for learned space {ours}, the primary {primary} serves space "
                f"{theirs}: versions side by side share the user vectors, so they must share the space (train it "
                f"with `feedserve train --keep-space`, or publish its space with `feedserve up`)")

    def stage(self, directory: Path, footprint: int, now: float, why: str = "operator",
              any_model: bool = False) -> Version:
        """Register the exported version in `directory` (its manifest.json) as staged; staging it again refreshes
        what is recorded and leaves its state alone. The family's first version becomes its primary. With
        `any_model` (a generation tier, which any decoder may fill) a model of another name is a version too,
        keyed `NAME/VERSION` (the imported SmolLM2 in the `large` tier: `smollm2/1`)."""
        try:
            text = (directory / "manifest.json").read_text()
            manifest = json.loads(text)
        except (OSError, ValueError) as exc:
            raise InvalidArgument("directory", f"{directory} holds no readable manifest.json: {exc}") from None
        if manifest.get("name") != self.name and not any_model:
            raise InvalidArgument("directory", f"{directory} holds {manifest.get('name')!r}, not a {self.name} version")
        version = str(manifest["version"])
        if manifest.get("name") != self.name:
            version = f"{manifest.get('name')}/{version}"
        extra = manifest.get("extra", {})
        metrics = {k: float(v) for k, v in manifest.get("metrics", {}).items() if isinstance(v, (int, float))}
        entry = self.versions.get(version)
        if entry is None:
            entry = self.versions[version] = Version(version, "staged", str(directory))
            entry.history.append({"at": now, "from": "", "to": "staged", "why": why})
        entry.directory, entry.offline_metrics, entry.footprint_bytes = str(directory), metrics, footprint
        entry.manifest = text
        entry.trained_to_sequence = int(extra.get("trained_to_sequence", 0))
        entry.space = int(extra.get("space", 0))
        if self.primary is None:
            self._move(version, "primary", "the family's first version", now)
        return entry

    def shadow_version(self, version: str, now: float, why: str = "operator", sample: float | None = None) -> None:
        """Score a sample of requests with `version` too, off the response path (the former shadow is staged);
        `sample`: the share of requests it scores (0: loaded, scoring none)."""
        if sample is not None:
            if not 0 <= sample <= 1:
                raise InvalidArgument("sample", f"a share of requests in [0, 1], got {sample}")
            self.shadow_share = sample
        if self.shadow != version:
            self._serve_beside(version, "shadow", now, why)

    def canary_version(self, version: str, share: float, now: float, why: str = "operator") -> None:
        """Answer `share` of users with `version` (the former canary is staged)."""
        if share:
            if not 0 < share <= 0.5:
                raise InvalidArgument("share", f"a canary answers a share in (0, 0.5] of users, got {share}")
            self.canary_share = share
        self._serve_beside(version, "canary", now, why)
        self.canary_since = now

    def _serve_beside(self, version: str, state: str, now: float, why: str) -> None:
        entry = self.get(version)
        if entry.state == "primary":
            raise FailedPrecondition(f"{self.name}/{version} is the primary already")
        if self.primary is None:
            raise FailedPrecondition(f"{self.name} has no primary to run a {state} beside: promote a version first")
        self._check_space(version)
        if entry.state not in SERVING:
            self._check_budget(version)
        current = self.holding(state)
        if current is not None and current != version:
            self._move(current, "staged", f"replaced by {version} as {state}", now)
        self._move(version, state, why, now)

    def promote(self, version: str, now: float, why: str = "operator") -> None:
        """Make `version` the primary; the former primary is retired (and is what a rollback brings back)."""
        entry = self.get(version)
        if entry.state == "primary":
            return
        primary = self.primary
        if primary is not None:
            self._check_space(version)
            if entry.state not in SERVING:
                self._check_budget(version)
            self._move(primary, "retired", f"replaced by {version}", now)
        self._move(version, "primary", why, now)

    def rollback(self, now: float, why: str = "operator") -> str:
        """Retire the canary; with none, retire the primary and serve the previous one again. Returns what changed."""
        canary = self.canary
        if canary is not None:
            self._move(canary, "retired", f"rolled back: {why}", now)
            return f"canary {canary} rolled back"
        primary = self.primary
        if primary is None:
            raise FailedPrecondition(f"{self.name} has neither a canary nor a primary to roll back")
        earlier = [v for v in self.versions.values() if v.version != primary
                   and any(h["from"] == "primary" for h in v.history)]
        if not earlier:
            raise FailedPrecondition(f"{self.name}/{primary} is the only version that has served: nothing to roll back to")
        previous = max(earlier, key=lambda v: max(h["at"] for h in v.history if h["from"] == "primary"))
        self._move(primary, "retired", f"rolled back: {why}", now)
        self._move(previous.version, "primary", f"restored by the rollback of {primary}", now)
        return f"primary {primary} rolled back to {previous.version}"


def in_canary(salt: str, user_id: int, share: float) -> bool:
    """Sticky: the same user is always on the same side for a salt; a new salt draws the share afresh."""
    digest = hashlib.blake2b(f"{salt}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


SERVED_ROLES = ("decomposed", "item_tower")  # the graphs a ranker loads (the naive graph and int8 twin stay on disk)


def footprint_bytes(directory: Path, items: int, bytes_per_item: int = BYTES_PER_ITEM) -> int:
    """What a version will hold once loaded: the weights of the graphs it serves twice (the file as read, and the
    engine's initialisers and arena), and a table row per catalog item."""
    graphs = json.loads((directory / "manifest.json").read_text()).get("graphs", {})
    served = [name for role, name in graphs.items() if role in SERVED_ROLES] or list(graphs.values())
    weights = sum((directory / name).stat().st_size for name in served if (directory / name).exists())
    return 2 * weights + items * bytes_per_item


@dataclass
class Registry:
    """Every family; `revision` is the catalog sequence number its latest change took (0: never changed)."""

    families: dict[str, Family] = field(default_factory=dict)
    revision: int = 0

    def family(self, name: str) -> Family:
        if name not in self.families:
            raise NotFound(f"family: no model family {name!r} (there are: {', '.join(self.families) or 'none'})")
        return self.families[name]

    def to_json(self) -> str:
        return json.dumps({"revision": self.revision,
                           "families": {name: asdict(f) for name, f in self.families.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Registry:
        data = json.loads(text)
        families = {}
        for name, f in data.get("families", {}).items():
            versions = {v: Version(**entry) for v, entry in f.pop("versions", {}).items()}
            guardrails = Guardrails(**f.pop("guardrails", {}))
            families[name] = Family(versions=versions, guardrails=guardrails, **f)
        return cls(families, int(data.get("revision", 0)))
