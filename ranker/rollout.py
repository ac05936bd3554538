"""The ranker's side of model routing: it follows the model registry in the store, loads the versions it names (primary,
canary, shadow) in the background within the memory budget, codes the catalog with each and warms it, then swaps the
resident set in one step. A request keeps the set it began with; a version no longer named is let go."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

from catalog import Store
from catalog.artifacts import version_directory
from catalog.feed import RegistryWatcher
from catalog.registry import Family, Registry, footprint_bytes, model_cache
from errors import FeedserveError
from mesh.config import default_home
from mesh.logging import get_logger
from ranker.versions import ModelVersion, Resident

__all__ = ["Host", "Rollout"]


class Host(Protocol):
    """What the rollout asks of the ranker it serves (ranker/service.py), and nothing more: how many item rows a
    version holds, a version loaded beside the serving ones, and the resident set swapped."""

    def item_rows(self) -> int:
        """Rows a version's item terms hold now (its footprint grows with them)."""
        ...

    def load_version(self, directory: Path) -> ModelVersion:
        """The version in `directory`, loaded, coded over the catalog, warmed and measured."""
        ...

    def swap(self, resident: Resident) -> None:
        """Serve `resident` from the next request on (requests under way keep the set they began with)."""
        ...


class Rollout:
    """Follows the registry's family of the primary; `not_loaded` says which named versions are not resident
    and why (loading, over the budget, failed)."""

    def __init__(self, core: Host, primary: ModelVersion, store: Store, poll_s: float = 0.2,
                 cache: Path | None = None) -> None:
        self.core, self.store = core, store
        self.cache = cache or model_cache(default_home())  # versions fetched from the store by hash
        self.resident = Resident.of(primary)  # what it last swapped in (the ranker starts on its primary alone)
        self.name = primary.manifest.name
        self.not_loaded: dict[str, str] = {}
        self.budget_bytes = 0
        self._pool: dict[str, ModelVersion] = {primary.version: primary}
        self._family: Family | None = None
        self._revision = self._done = -1
        self._changed = threading.Condition()
        self._stop = False
        self.log = get_logger("ranker")
        self._register(primary)
        self.watcher = RegistryWatcher(store, self._on_change, poll_s)
        self._thread = threading.Thread(target=self._run, name="rollout", daemon=True)

    def _register(self, primary: ModelVersion) -> None:
        """A family the registry does not know yet starts with the version this ranker was started on as primary."""
        self.store.upload_version(primary.manifest.directory)  # its files, by SHA-256, for rankers on other hosts

        def change(registry: Registry) -> None:
            family = registry.families.setdefault(self.name, Family(self.name))
            if primary.version not in family.versions:
                footprint = footprint_bytes(primary.manifest.directory, self.core.item_rows())
                family.stage(primary.manifest.directory, footprint, time.time(), "served at the ranker's start")
            if family.primary != primary.version:  # e.g. `feedserve up` published a newer version's learned space
                family.promote(primary.version, time.time(), "served at the ranker's start (its space is served)")

        self.store.change_registry(change)

    def start(self) -> Rollout:
        self._thread.start()
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()
        with self._changed:
            self._stop = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def _on_change(self, registry: Registry) -> None:
        with self._changed:
            self._family = registry.families.get(self.name)
            self._revision = registry.revision
            self._changed.notify_all()

    def settle(self, timeout: float = 60.0) -> bool:
        """Read the registry now and wait until what it names is resident (or refused): for tests and tools."""
        self.watcher.check()
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._done < self._revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._done >= self._revision and not self._stop:
                    self._changed.wait()
                if self._stop:
                    return
                family, revision = self._family, self._revision
            if family is not None:
                try:
                    self._reconcile(family)
                except Exception as exc:  # the resident set stays as it was; the next change tries again
                    self.log.warning("routing not applied", revision=revision, error=str(exc))
            with self._changed:
                self._done = max(self._done, revision)
                self._changed.notify_all()

    def _reconcile(self, family: Family) -> None:
        self.budget_bytes = family.memory_budget_bytes
        wanted = {role: family.holding(role) for role in ("primary", "canary", "shadow")}
        self.not_loaded = {v: reason for v, reason in self.not_loaded.items() if v in wanted.values()}
        for role in ("primary", "canary", "shadow"):
            version = wanted[role]
            if version is not None and version not in self._pool:
                self._try_load(family, version, role)
        current = self.resident
        primary = self._pool.get(wanted["primary"] or "", current.primary)
        canary, shadow = (self._pool.get(wanted[r] or "") for r in ("canary", "shadow"))
        resident = Resident.of(primary, canary if canary is not primary else None,
                               shadow if shadow not in (primary, canary) else None, family)
        self.core.swap(resident)
        self.resident = resident
        keep = {m.version for _, m in resident.roles()}
        self._pool = {v: m for v, m in self._pool.items() if v in keep}  # requests under way hold their own
        if [m.version for _, m in current.roles()] != [m.version for _, m in resident.roles()]:
            self.log.info("models swapped", **{role: m.key for role, m in resident.roles()})

    def _try_load(self, family: Family, version: str, role: str) -> None:
        entry = family.versions[version]
        stays = sum(m.resident_bytes for m in self._pool.values()
                    if m.version in {family.primary, family.canary, family.shadow})
        try:  # where this host reads it: the staged directory, or the files fetched from the store
            directory = version_directory(self.store, entry, self.cache)
        except (FeedserveError, OSError) as exc:
            self.not_loaded[version] = f"failed: {exc}"
            self.log.warning("model not loaded", version=version, role=role, why=str(exc))
            return
        need = footprint_bytes(directory, self.core.item_rows())
        if stays + need > family.memory_budget_bytes:
            self.not_loaded[version] = (f"over the memory budget: {need / 2**20:.0f} MiB needed beside "
                                        f"{stays / 2**20:.0f} MiB resident, budget {family.memory_budget_bytes / 2**20:.0f} MiB")
            self.log.warning("model not loaded", version=version, role=role, why=self.not_loaded[version])
            return
        self.not_loaded[version] = "loading"
        started = time.monotonic()
        try:
            model = self.core.load_version(directory)
        except (FeedserveError, OSError, KeyError, ValueError) as exc:
            self.not_loaded[version] = f"failed: {exc}"
            self.log.warning("model not loaded", version=version, role=role, why=str(exc))
            return
        self.not_loaded.pop(version, None)
        self._pool[version] = model
        self.log.info("model loaded", model=model.key, role=role, seconds=round(time.monotonic() - started, 2),
                      resident_mib=round(model.resident_bytes / 2**20, 1))
