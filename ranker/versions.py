"""A loaded version of the ranking model (engines, item-term table, light stage, batcher) and the set of versions a
ranker serves at one moment (primary, canary, shadow), swapped whole so that a request keeps the set it began with."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from catalog.registry import Family
from engines import ModelManifest, load_engine
from engines.base import verify_files
from ranker.batching import Batcher
from ranker.cascade import LightStage
from ranker.features import HEADS, HIDDEN_ITEM
from ranker.items import ItemTable
from ranker.transitions import FILE as TRANSITIONS_FILE
from ranker.transitions import Transitions

__all__ = ["ModelVersion", "Pace", "Resident", "resident_set_bytes"]

_TOWER_CHUNK = 8_192
_PACED_CHUNK = 1_024  # rows a paced load codes between pauses


class Pace:
    """Spreads background work so that it takes at most `share` of one core: after each step it sleeps for as
    long as the step's CPU asks (a loading version beside a serving one; requests keep the rest)."""

    def __init__(self, share: float = 0.3) -> None:
        self.share = share
        self._since = time.thread_time()

    def __call__(self) -> None:
        spent = time.thread_time() - self._since
        time.sleep(spent * (1 - self.share) / self.share)  # rate limiting background work, not synchronisation
        self._since = time.thread_time()


def resident_set_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ModelVersion:
    """One version's engines (the decomposed model and the item tower), the first layer's item term for every
    catalog item, the cascade's light stage over it, and the batcher that shares its runs."""

    def __init__(self, manifest: ModelManifest, precision: str, device: str, threads: int,
                 head_weights: dict[str, float] | None = None, tower_threads: int | None = None) -> None:
        verify_files(manifest)  # a file that is not what the version was written with: refused, named
        self.manifest = manifest
        self.engine = load_engine(manifest, "decomposed", precision, device, threads)
        # the item tower codes items off the request path: a version loaded beside others codes on one thread, the
        # caller's; the serving ranker's first start codes the whole catalog with every thread it has
        self.tower = load_engine(manifest, "item_tower", "fp32", device, tower_threads or threads)
        # background scoring (the light stage's fit while loading, shadow scoring): one thread, the caller's, so
        # that it takes at most one core from requests. (Not a lowered priority: a thread descheduled while it
        # holds the GIL stalls every request thread; measured: P99 twice as long)
        self.quiet_engine = load_engine(manifest, "decomposed", precision, device, 1)
        weights = {**manifest.extra.get("head_weights", {}), **(head_weights or {})}
        self.head_weights = np.array([weights.get(h, 0.0) for h in HEADS], dtype=np.float32)
        cold = manifest.extra.get("cold_start")
        # a user with no vector yet is ranked from the model's cold-start vector (the mean of the learned users)
        self.cold_start = np.asarray(cold, np.float32) if cold else None
        # what follows what in users' sequences, learned with this version (none: the transition columns stay zero)
        saved = manifest.directory / TRANSITIONS_FILE
        self.transitions = Transitions.load(saved) if saved.is_file() else Transitions.fit([], 0)
        self.terms = np.zeros((0, HIDDEN_ITEM), np.float32)
        self.light: LightStage | None = None  # the cascade's first stage, once fitted (None: the full model only)
        self.unit_terms = np.zeros((0, 0), np.float32)  # the item terms at the light stage's units
        self.first_layer: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # Wu, Wc, b1: the request term
        self.fitting = False
        pool = getattr(self.engine, "threads", None)  # ONNX Runtime's intra-op threads (TensorRT: none to read)
        self.batcher = Batcher(self.run_model, {}, engine_cpu_ns=pool.cpu_ns if pool is not None else lambda: 0)
        self.quiet_batcher = Batcher(self.quiet_engine.run, {})
        self.resident_bytes = 0  # measured once loaded
        self.dirty: set[int] | None = None  # while loading: rows the change feed changed, coded again at the end

    def run_model(self, inputs, outputs) -> None:
        self.engine.run(inputs, outputs)

    @property
    def key(self) -> str:
        return f"{self.manifest.name}/{self.manifest.version}"

    @property
    def version(self) -> str:
        return self.manifest.version

    def fit_terms(self, capacity: int) -> None:
        """Grow the tables to `capacity` rows (new arrays, swapped in: amortised doubling)."""
        if len(self.terms) < capacity:
            grown = np.zeros((capacity, HIDDEN_ITEM), np.float32)
            grown[:len(self.terms)] = self.terms
            self.terms = grown
            self.batcher.fixed = self.quiet_batcher.fixed = {"item_table": self.terms, "head_weights": self.head_weights}
        if self.light is not None and len(self.unit_terms) < len(self.terms):
            units = np.zeros((len(self.terms), len(self.light.units)), np.float32)
            units[:len(self.unit_terms)] = self.unit_terms
            self.unit_terms = units

    def item_terms(self, items: ItemTable, rows: np.ndarray, pace: Pace | None = None) -> np.ndarray:
        """The first layer's item term of `rows`, through this version's item tower (`pace`: between chunks)."""
        table = np.empty((len(rows), HIDDEN_ITEM), dtype=np.float32)
        chunk = _TOWER_CHUNK if pace is None else _PACED_CHUNK
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            self.tower.run({"items": items.features(part)}, {"item_part": table[start:start + len(part)]})
            if pace is not None:
                pace()
        return table

    def set_terms(self, rows: np.ndarray, terms: np.ndarray) -> None:
        """Store coded rows (the caller holds the catalog lock and has grown the tables)."""
        self.terms[rows] = terms
        if self.light is not None:
            self.unit_terms[rows] = terms[:, self.light.units]

    def set_light(self, light: LightStage) -> None:
        """Serve the cascade with `light` (the caller holds the catalog lock)."""
        self.light = light
        self.unit_terms = np.zeros((0, len(light.units)), np.float32)
        self.fit_terms(len(self.terms))
        self.unit_terms[:] = self.terms[:, light.units]


@dataclass(frozen=True)
class Resident:
    """What a ranker serves at one moment. A request reads it once: a swap never changes a request under way."""

    primary: ModelVersion
    canary: ModelVersion | None = None
    shadow: ModelVersion | None = None
    family: Family | None = None  # the routing that chose them (the canary's share and salt)
    by_version: dict[str, ModelVersion] = field(default_factory=dict)

    @classmethod
    def of(cls, primary: ModelVersion, canary: ModelVersion | None = None, shadow: ModelVersion | None = None,
           family: Family | None = None) -> Resident:
        by_version = {v.version: v for v in (shadow, canary, primary) if v is not None}
        return cls(primary, canary, shadow, family, by_version)

    def answering(self, user_id: int, asked: str) -> ModelVersion:
        """The version that answers: the one asked for when it serves requests here (primary or canary), else
        the routing's choice for the user (the canary for its share), else the primary."""
        if asked:
            chosen = self.by_version.get(asked)
            return chosen if chosen is not None and chosen is not self.shadow else self.primary
        family = self.family
        if self.canary is not None and family is not None and family.route(user_id) == self.canary.version:
            return self.canary
        return self.primary

    def roles(self) -> list[tuple[str, ModelVersion]]:
        return [(role, v) for role, v in (("primary", self.primary), ("canary", self.canary), ("shadow", self.shadow))
                if v is not None]
