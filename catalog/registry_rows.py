"""The model registry's rows in the store: one per family (its canary share and salt, shadow sample, memory budget
and guardrails), one per version (its state, where its files are, what training measured), and one per change of
state with its reason. A change is one transaction under the store's write lock that takes the next catalog
sequence number, so every replica that follows the registry (catalog/feed.py, RegistryWatcher) sees the changes in
order and none is lost between two writers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from catalog.artifacts import held_artifacts, manifest_files
from catalog.registry import BYTES_PER_ITEM, HISTORY, Family, Guardrails, Registry, Version, footprint_bytes
from errors import FailedPrecondition

__all__ = ["REGISTRY_DDL", "StoredRegistry"]

REGISTRY_DDL = """
CREATE TABLE IF NOT EXISTS model_families (name TEXT PRIMARY KEY, canary_share DOUBLE PRECISION NOT NULL,
    shadow_share DOUBLE PRECISION NOT NULL, salt TEXT NOT NULL, memory_budget_bytes BIGINT NOT NULL,
    guardrails TEXT NOT NULL, canary_since DOUBLE PRECISION NOT NULL, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS model_versions (family TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL,
    directory TEXT NOT NULL, offline_metrics TEXT NOT NULL, trained_to_sequence BIGINT NOT NULL,
    footprint_bytes BIGINT NOT NULL, space BIGINT NOT NULL, manifest TEXT NOT NULL, seq BIGINT NOT NULL,
    PRIMARY KEY (family, version));
CREATE TABLE IF NOT EXISTS model_changes (seq BIGINT NOT NULL, step INTEGER NOT NULL, family TEXT NOT NULL,
    version TEXT NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL, why TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, PRIMARY KEY (seq, step));
CREATE INDEX IF NOT EXISTS model_changes_by_version ON model_changes (family, version, seq);
"""

_FAMILY = "name, canary_share, shadow_share, salt, memory_budget_bytes, guardrails, canary_since"
_VERSION = "family, version, state, directory, offline_metrics, trained_to_sequence, footprint_bytes, space, manifest"
T = TypeVar("T")


class StoredRegistry:
    """The store's registry tables, as part of `Store`: the same connection, transactions and write lock."""

    dialect: str
    _transaction: Callable[..., AbstractContextManager[Any]]
    _sql: Callable[[str], str]
    _next: Callable[[Any, str, int], int]
    upload_version: Callable[[Path], int]
    counts: Callable[[], dict[str, int]]

    def register_version(self, directory: Path, why: str = "operator", per_item: bool = True) -> Version:
        """Upload the version's files by SHA-256 (catalog/artifacts.py), then stage it in its family (made when
        new: its first version becomes the primary). `per_item`: the version holds a row per catalog item (a
        ranker), which its footprint counts; a generation tier holds none."""
        counts = self.counts() if per_item else {}
        rows = counts.get("items", 0) + counts.get("deleted_items", 0)  # a deleted item keeps its row
        self.upload_version(directory)
        footprint = footprint_bytes(directory, rows, BYTES_PER_ITEM)
        name = str(json.loads((directory / "manifest.json").read_text()).get("name", ""))

        def stage(registry: Registry) -> Version:
            return registry.families.setdefault(name, Family(name)).stage(directory, footprint, time.time(), why)

        return self.change_registry(stage)[1]

    def registry(self) -> Registry:
        """Every family as committed, read in one snapshot."""
        with self._transaction(write=False) as cur:
            if self.dialect == "postgresql":  # the three reads below see one moment, not three
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return _read(cur)

    def registry_sequence(self) -> int:
        """The catalog sequence number the registry's latest change took (0: never changed)."""
        with self._transaction(write=False) as cur:
            return _sequence(cur)

    def change_registry(self, change: Callable[[Registry], T]) -> tuple[Registry, T]:
        """Read the registry, apply `change` to it and write what changed, in one transaction (a change that
        raises writes nothing). Returns the registry as written and `change`'s result."""
        with self._transaction() as cur:
            registry = _read(cur)
            before = _rows(registry)
            old = {id(entry) for f in registry.families.values() for v in f.versions.values() for entry in v.history}
            result = change(registry)
            after = _rows(registry)
            changed = [key for key, row in after.items() if before.get(key) != row]
            changes = [(f.name, v.version, entry) for f in registry.families.values() for v in f.versions.values()
                       for entry in v.history if id(entry) not in old]
            for key in changed:
                if key[0] == "version" and before.get(key, ())[-1:] != after[key][-1:]:
                    _check_files(self, cur, "/".join(key[1:]), after[key][-1])
            if changed or changes:
                seq = self._next(cur, "seq", 1)
                for key in changed:
                    self._write(cur, key, after[key], seq)
                cur.executemany(self._sql("INSERT INTO model_changes (seq, step, family, version, from_state, to_state,"
                                          " why, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                                [(seq, step, family, version, entry["from"], entry["to"], entry["why"], entry["at"])
                                 for step, (family, version, entry) in enumerate(sorted(changes, key=lambda c: c[2]["at"]))])
                cur.execute(self._sql("UPDATE counters SET value = ? WHERE name = 'registry'"), (seq,))
                registry.revision = seq
        return registry, result

    def _write(self, cur: Any, key: tuple[str, ...], row: tuple[Any, ...], seq: int) -> None:
        if key[0] == "family":
            cur.execute(self._sql(f"INSERT INTO model_families ({_FAMILY}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                                  " ON CONFLICT (name) DO UPDATE SET canary_share = excluded.canary_share,"
                                  " shadow_share = excluded.shadow_share, salt = excluded.salt,"
                                  " memory_budget_bytes = excluded.memory_budget_bytes, guardrails = excluded.guardrails,"
                                  " canary_since = excluded.canary_since, seq = excluded.seq"), (*row, seq))
        else:
            cur.execute(self._sql(f"INSERT INTO model_versions ({_VERSION}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                                  " ON CONFLICT (family, version) DO UPDATE SET state = excluded.state,"
                                  " directory = excluded.directory, offline_metrics = excluded.offline_metrics,"
                                  " trained_to_sequence = excluded.trained_to_sequence,"
                                  " footprint_bytes = excluded.footprint_bytes, space = excluded.space,"
                                  " manifest = excluded.manifest, seq = excluded.seq"), (*row, seq))


def _check_files(stored: StoredRegistry, cur: Any, name: str, manifest: str) -> None:
    """A version is registered only once the store holds every file its manifest records (Store.upload_version)."""
    files = manifest_files(manifest) if manifest else {}
    if not files:
        return
    held = held_artifacts(cur, stored._sql, set(files.values()))
    for path, digest in files.items():
        if digest not in held:
            raise FailedPrecondition(f"model {name}: {path} is not in the store (upload the version's files first: "
                                     f"feedserve models stage does)")


def _sequence(cur: Any) -> int:
    cur.execute("SELECT value FROM counters WHERE name = 'registry'")
    return int(cur.fetchone()[0])


def _read(cur: Any) -> Registry:
    revision = _sequence(cur)
    cur.execute(f"SELECT {_FAMILY} FROM model_families")
    families = {str(name): Family(str(name), {}, float(canary), float(shadow), str(salt), int(budget),
                                  Guardrails(**json.loads(guardrails)), float(since))
                for name, canary, shadow, salt, budget, guardrails, since in cur.fetchall()}
    cur.execute(f"SELECT {_VERSION} FROM model_versions")
    for family, version, state, directory, metrics, trained_to, footprint, space, manifest in cur.fetchall():
        families[family].versions[version] = Version(str(version), str(state), str(directory), json.loads(metrics),
                                                     int(trained_to), int(footprint), int(space), [], str(manifest))
    # each version's latest changes, oldest first
    cur.execute(f"SELECT family, version, from_state, to_state, why, at FROM (SELECT *, ROW_NUMBER() OVER"
                f" (PARTITION BY family, version ORDER BY seq DESC, step DESC) AS n FROM model_changes) AS latest"
                f" WHERE n <= {HISTORY} ORDER BY seq, step")
    for family, version, was, became, why, at in cur.fetchall():
        entry = families.get(family, Family(family)).versions.get(version)
        if entry is not None:
            entry.history.append({"at": float(at), "from": str(was), "to": str(became), "why": str(why)})
    return Registry(families, revision)


def _rows(registry: Registry) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """Each family's and version's row as the tables hold it, keyed ("family", name) or ("version", name, version)."""
    rows: dict[tuple[str, ...], tuple[Any, ...]] = {}
    for family in registry.families.values():
        rows[("family", family.name)] = (family.name, float(family.canary_share), float(family.shadow_share),
                                         family.salt, int(family.memory_budget_bytes),
                                         json.dumps(asdict(family.guardrails), sort_keys=True), float(family.canary_since))
        for version in family.versions.values():
            rows[("version", family.name, version.version)] = (
                family.name, version.version, version.state, version.directory,
                json.dumps(version.offline_metrics, sort_keys=True), int(version.trained_to_sequence),
                int(version.footprint_bytes), int(version.space), version.manifest)
    return rows
