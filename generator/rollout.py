"""Generation tiers through the model registry: each tier (small, large) is a family in the registry; the generator
serves its primary, answers the canary's share of users with the canary, and follows every change without a restart
(a version is loaded by the residency pool on first use, within its memory budget)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from catalog import Store
from catalog.artifacts import version_directory
from catalog.feed import RegistryWatcher
from catalog.registry import Family, Registry, footprint_bytes, model_cache
from engines.base import load_manifest
from errors import FeedserveError
from generator.pipeline import RouterConfig
from generator.registry import tier_spec
from generator.residency import ResidencyPool
from mesh.config import default_home
from mesh.logging import get_logger

__all__ = ["TierRouting", "TIERS"]

TIERS = ("small", "large")  # the pipeline's two roles; each is a family of the same name


class TierRouting:
    """The tiers' versions as the registry names them. The version each tier was started on keeps its pool name
    (`small`); any other version is added to the pool as `small@2`, which is the name feeds of usage report."""

    def __init__(self, pool: ResidencyPool, store: Store, router: RouterConfig = RouterConfig(), poll_s: float = 0.2) -> None:
        self.pool, self.store = pool, store
        self.started = {tier: getattr(router, tier) for tier in TIERS}  # tier -> the pool name it started on
        self.directories = {tier: pool.spec(name).graph.parent for tier, name in self.started.items()}
        self.families: dict[str, Family] = {}
        self.names: dict[tuple[str, str], str] = {}  # (tier, version) -> pool name
        self.log = get_logger("generator")
        self._register()
        self.watcher = RegistryWatcher(store, self._on_change, poll_s)

    def _register(self) -> None:
        """Tiers the registry does not know yet start with the versions this generator was started on; a tier the
        registry knows gets the started version staged beside its primary (the registry decides what serves)."""
        for directory in self.directories.values():  # their files, by SHA-256, for generators on other hosts
            self.store.upload_version(directory)

        def change(registry: Registry) -> None:
            for tier, directory in self.directories.items():
                family = registry.families.setdefault(tier, Family(tier))
                known = {Path(v.directory) for v in family.versions.values()}
                if family.primary is None or directory not in known:
                    version = family.stage(directory, footprint_bytes(directory, 0), time.time(),
                                           "served at the generator's start", any_model=True)
                    if family.primary != version.version:
                        self.log.warning("tier started on a version the registry does not serve", tier=tier,
                                         started=version.version, primary=family.primary,
                                         serve_it=f"feedserve models promote --family {tier} {version.version}")

        self.store.change_registry(change)

    def start(self) -> TierRouting:
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()

    def _name(self, tier: str, family: Family, version: str) -> str:
        """The pool's name for a tier's version, adding its spec to the pool the first time."""
        key = (tier, version)
        if key not in self.names:
            entry = family.versions[version]
            if Path(entry.directory) == self.directories[tier]:
                self.names[key] = self.started[tier]
            else:
                name = f"{self.started[tier]}@{version}"
                directory = version_directory(self.store, entry, model_cache(default_home()))  # fetched if not here
                self.pool.specs[name] = tier_spec(name, load_manifest(directory))
                self.names[key] = name
        return self.names[key]

    def _on_change(self, registry: Registry) -> None:
        families = {}
        for tier in TIERS:
            family = registry.families.get(tier)
            if family is None or family.primary is None:
                continue
            try:
                for version in (family.primary, family.canary):
                    if version is not None:
                        self._name(tier, family, version)
            except (FeedserveError, OSError, KeyError, ValueError) as exc:  # a version that cannot be read keeps the old routing
                self.log.warning("tier routing not applied", tier=tier, error=str(exc))
                continue
            families[tier] = family
        self.families = families  # one assignment: a request reads the old routing or the new

    def router_for(self, user_id: int, base: RouterConfig) -> RouterConfig:
        """The pipeline's router for this user: each tier's primary, or its canary for the canary's share."""
        families = self.families
        names = {}
        for tier in TIERS:
            family = families.get(tier)
            version = family.route(user_id) if family is not None else None
            names[tier] = self.names.get((tier, version), getattr(base, tier)) if version else getattr(base, tier)
        return dataclasses.replace(base, **names)
