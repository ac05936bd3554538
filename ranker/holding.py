"""The model versions a ranker holds: those serving (primary, canary, shadow) and those loading beside them, each with
item terms over the whole catalog and its cascade's light stage; how a version is loaded, warmed and measured, and how
the resident set is swapped (what ranker/rollout.py asks of the ranker). A part of `Ranker` (ranker/service.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from catalog import Store
from engines import ModelManifest
from engines.base import load_manifest
from feedserve.v1 import ranker_pb2
from mesh.logging import get_logger
from mesh.methods import HeapOutputs
from ranker import graphs
from ranker.cascade import LightFit, LightStage, load_light_stage, save_light_stage
from ranker.features import CONTEXT_DIM, ITEM_DIM, USER_DIM, FeatureSpace
from ranker.items import ItemTable
from ranker.versions import ModelVersion, Pace, Resident, resident_set_bytes

__all__ = ["FIT_RANKINGS", "HeldVersions", "LOAD_SHARE", "WARM_REQUESTS"]

WARM_REQUESTS = 8  # rankings a version loaded beside the serving ones runs before it answers anyone (first runs are slow)
LOAD_SHARE = 0.5  # of one core, at most, for loading a version beside the serving ones
FIT_RANKINGS = 128  # rankings of the full model the light stage is fitted on, when a model has none yet


class HeldVersions:
    """The versions part of `Ranker`: the same lock, item table and store."""

    resident: Resident
    loading: list[ModelVersion]
    items: ItemTable
    space: FeatureSpace
    store: Store
    cascade_keep: int
    cascade_fit: threading.Thread | None
    engine_options: tuple[str, str, int, dict[str, float] | None]
    _lock: threading.Lock
    rank: Callable[..., Any]
    _context: Callable[[ranker_pb2.RankRequest], np.ndarray]
    check_space: Callable[[ModelManifest], None]

    def held(self) -> list[ModelVersion]:
        """Every version whose item terms follow the catalog: those serving and those loading."""
        return [v for _, v in self.resident.roles()] + list(self.loading)

    def start_cascade(self, model: ModelVersion, pace: Pace | None = None) -> None:
        """The light stage saved beside the model, or fitted now on the full model's rankings and saved there (`pace`:
        on the one-thread engine, paced). With nothing to fit on yet (an empty catalog), the full model ranks every
        candidate until items arrive."""
        if model.first_layer is None:
            weights = graphs.weights_of(model.manifest.path("naive"))
            _i, _c = USER_DIM + ITEM_DIM, USER_DIM + ITEM_DIM + CONTEXT_DIM
            model.first_layer = (weights.w1[:USER_DIM].copy(), weights.w1[_i:_c].copy(), weights.b1.copy())
        light = load_light_stage(model.manifest.directory, model.key)
        log = get_logger("ranker")
        if light is None:
            started = time.monotonic()
            light = self._fit_light(model, pace)
            if light is None:
                log.info("cascade waits: no servable items to fit its light stage on yet; the full model ranks")
                return
            try:
                save_light_stage(light, model.manifest.directory, model.key)
            except OSError as exc:  # a read-only model directory: fitted again at the next start
                log.warning("light stage not saved", error=str(exc))
            log.info("cascade light stage fitted", model=model.key, rankings=light.fitted_on,
                     seconds=round(time.monotonic() - started, 1), top20_kept=round(light.agreement, 3),
                     keep=self.cascade_keep)
        with self._lock:
            model.set_light(light)

    def _fit_cascade_in_background(self, model: ModelVersion) -> None:
        """Items arrived while the cascade had nothing to fit on: fit it now, off the change feed's thread."""
        def run() -> None:
            try:
                self.start_cascade(model)
            finally:
                model.fitting = False

        model.fitting = True
        self.cascade_fit = threading.Thread(target=run, name="cascade-fit", daemon=True)
        self.cascade_fit.start()

    def _fit_light(self, model: ModelVersion, pace: Pace | None = None) -> LightStage | None:
        """Fit on the full model's rankings for a sample of the served space's learned users (where the space has
        none: users placed at servable items, one item each)."""
        _, users = self.store.learned_users(self.store.active_space())
        if not len(users):
            users = self.items.vectors[np.flatnonzero(self.items.servable[:self.items.size])]
        users = users[np.random.default_rng(0).choice(len(users), min(FIT_RANKINGS, len(users)), replace=False)]
        fit = LightFit(self.cascade_keep)
        for user in users:
            if not np.linalg.norm(user) > 0:
                continue
            outputs = HeapOutputs()
            self.rank(ranker_pb2.RankRequest(k=1, return_all_scores=True), {"user_vector": user.astype(np.float32)},
                      outputs, model=model, quiet=pace is not None)
            ids = outputs.arrays["candidate_ids"]
            unit = user / np.linalg.norm(user) if model.cold_start is not None else user  # as rank() reads it
            request = self._request_part(model, self.space.user_features(unit[None, :].astype(np.float32), [None]),
                                         self._context(ranker_pb2.RankRequest()))
            fit.add(request, model.terms[ids - 1], self.items.vectors[ids - 1] @ unit, outputs.arrays["scores"])
            if pace is not None:
                pace()
        return fit.finish() if fit.rankings else None

    @staticmethod
    def _request_part(model: ModelVersion, user_part: np.ndarray, context_part: np.ndarray) -> np.ndarray:
        """The first layer's once-per-request term [512], as the decomposed graph computes it."""
        assert model.first_layer is not None  # set before the light stage exists
        wu, wc, b1 = model.first_layer
        return (user_part @ wu + context_part @ wc)[0] + b1

    def item_rows(self) -> int:
        """Rows a version's item terms hold now."""
        return self.items.capacity

    def swap(self, resident: Resident) -> None:
        """Serve `resident` from the next request on: one assignment, so a request reads the old set or the new,
        never a mix; versions that finished loading stop being tracked as loading."""
        with self._lock:
            self.resident = resident
            self.loading = [m for m in self.loading if m.dirty is not None]

    def load_version(self, directory: Path) -> ModelVersion:
        """Load a version beside the serving ones: engines, item terms over the whole catalog (rows the change feed
        changes meanwhile are coded again), its light stage, a few warm-up rankings; then measure what it holds."""
        manifest = load_manifest(directory)
        self.check_space(manifest)
        before = resident_set_bytes()
        model = ModelVersion(manifest, *self.engine_options, tower_threads=1)
        with self._lock:
            model.fit_terms(self.items.capacity)
            n = self.items.size
            model.dirty = set()
            self.loading.append(model)
        pace = Pace(LOAD_SHARE)
        try:
            terms = model.item_terms(self.items, np.arange(n), pace)
            with self._lock:
                model.fit_terms(self.items.capacity)
                model.terms[:n] = terms
            while True:  # what changed while coding: again, until nothing did
                with self._lock:
                    rows = np.array(sorted(model.dirty or ()), np.int64)
                    model.dirty = set() if len(rows) else None
                if not len(rows):
                    break
                self.code_items(model, rows, pace)
            if self.cascade_keep:
                self.start_cascade(model, pace)
            for _ in range(WARM_REQUESTS):
                self.rank(ranker_pb2.RankRequest(k=20), {}, HeapOutputs(), model=model)
        except BaseException:
            with self._lock:
                self.loading.remove(model)
            raise
        model.resident_bytes = max(resident_set_bytes() - before, model.terms.nbytes + model.unit_terms.nbytes)
        return model

    def code_items(self, model: ModelVersion, rows: np.ndarray, pace: Pace | None = None) -> None:
        """Code `rows` with `model`'s item tower (outside the lock) and store them (under it)."""
        terms = model.item_terms(self.items, rows, pace)
        with self._lock:
            model.fit_terms(self.items.capacity)
            model.set_terms(rows, terms)
