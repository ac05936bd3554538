"""The ranking cascade's light first stage: every candidate scored from what is already computed, the full model
run on the best few hundred only.

The decomposed model's first layer is `relu(request_part + item_term + cross_part)`. The request part is computed
once per request and the item term once per item, so `relu(request_part + item_term)` costs one gather and an add
per candidate. The light stage reads a subset of those units (the ones that carry the full model's ranking) and
the user.item dot product, through a linear head distilled from the full model: fitted, per model version, on
the rankings the full model gives the store's learned users (or, where a space has none, users placed at items).

    light = relu(request_part[units] + item_term[units]) @ weights + dot_weight * user.item
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LightStage", "LightFit", "load_light_stage", "save_light_stage", "LIGHT_FILE", "LIGHT_UNITS",
           "top_rows"]

LIGHT_FILE = "derived/light-stage.npz"  # serving derives it: outside the version's recorded files
LIGHT_UNITS = 128  # first-layer units the light stage reads, of 512: a quarter of the gather
FIT_FORMAT = 1


@dataclass
class LightStage:
    """A linear head over chosen first-layer units and the dot product; `fitted_on` says on how many rankings."""

    units: np.ndarray  # int64 [m]
    weights: np.ndarray  # float32 [m]
    dot_weight: float
    fitted_on: int
    agreement: float  # on the fitting rankings: share of the full model's top 20 inside the light stage's kept set

    def scores(self, request_part: np.ndarray, unit_terms: np.ndarray, dot: np.ndarray) -> np.ndarray:
        """[n] from the request's first-layer term [512], the candidates' terms at `units` [n, m], user.item [n]."""
        hidden = unit_terms + request_part[self.units]
        np.maximum(hidden, 0, out=hidden)
        return hidden @ self.weights + self.dot_weight * dot


def top_rows(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the `keep` best scores, in their original order (all of them when there are no more)."""
    if keep >= len(scores):
        return np.arange(len(scores))
    return np.sort(np.argpartition(-scores, keep - 1)[:keep])


class LightFit:
    """Fits the light stage on rankings of the full model, one at a time (normal equations accumulated: no design
    matrix over all rankings is held). A weighted ridge regression on per-request centred scores (a per-request
    offset changes no order), with the full model's top `keep` weighted up: the light stage must keep those; the
    order below matters less. Solved over all units first, then over the `units` that carry most of it (a
    sub-matrix of the same normal equations: a unit's value does not depend on which others are kept)."""

    CHECKED = 16  # rankings kept to measure how well the fitted stage keeps the full model's top 20

    def __init__(self, keep: int, units: int = LIGHT_UNITS, ridge: float = 1e-2) -> None:
        self.keep, self.units, self.ridge = keep, units, ridge
        self.gram: np.ndarray | None = None
        self.rhs: np.ndarray | None = None
        self.rankings = 0
        self._checked: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, request_part: np.ndarray, terms: np.ndarray, dot: np.ndarray, full: np.ndarray) -> None:
        """One ranking: the request's first-layer term [512], the candidates' item terms [n, 512], user.item [n], and
        the full model's scores [n]."""
        if len(full) < 2:
            return
        x = np.concatenate([np.maximum(terms + request_part, 0), dot[:, None]], axis=1).astype(np.float64)
        weight = np.ones(len(full))
        weight[top_rows(full, self.keep)] = 4.0
        y = full.astype(np.float64)
        x -= (weight @ x) / weight.sum()
        y = y - (weight @ y) / weight.sum()
        xw = x * weight[:, None]
        gram, rhs = xw.T @ x, xw.T @ y
        self.gram = gram if self.gram is None else self.gram + gram
        self.rhs = rhs if self.rhs is None else self.rhs + rhs
        self.rankings += 1
        if len(self._checked) < self.CHECKED:
            self._checked.append((request_part, terms, dot, full))

    def _solve(self, columns: np.ndarray) -> np.ndarray:
        assert self.gram is not None and self.rhs is not None
        gram = self.gram[np.ix_(columns, columns)]
        # ridge in proportion to each column's own scale: the same shrinkage as on standardised columns
        return np.linalg.solve(gram + self.ridge * np.diag(np.diag(gram) + 1e-12), self.rhs[columns])

    def finish(self) -> LightStage:
        if self.gram is None:
            raise ValueError("the light stage needs at least one ranking of two or more candidates to fit on")
        width = len(self.gram) - 1  # the last column is the dot product
        coef = self._solve(np.arange(width + 1))
        importance = np.abs(coef[:-1]) * np.sqrt(np.diag(self.gram)[:-1])
        chosen = np.sort(np.argsort(-importance, kind="stable")[:min(self.units, width)])
        coef = self._solve(np.r_[chosen, width])
        stage = LightStage(chosen.astype(np.int64), coef[:-1].astype(np.float32), float(coef[-1]), self.rankings, 0.0)
        kept = []
        for request, terms, dot, full in self._checked:
            light = stage.scores(request, np.ascontiguousarray(terms[:, chosen]), dot)
            best = np.argsort(-full, kind="stable")[:20]
            kept.append(np.isin(best, top_rows(light, self.keep)).mean())
        stage.agreement = float(np.mean(kept))
        return stage


def save_light_stage(stage: LightStage, directory: Path, model: str) -> Path:
    """Beside the model's graphs, written atomically (a reader sees the old file or the new one)."""
    path = directory / LIGHT_FILE
    path.parent.mkdir(exist_ok=True)
    staging = path.parent / f".{path.name}.{os.getpid()}"
    with open(staging, "wb") as f:
        np.savez(f, units=stage.units, weights=stage.weights, dot_weight=np.float32(stage.dot_weight),
                 meta=np.array(json.dumps({"format": FIT_FORMAT, "model": model, "fitted_on": stage.fitted_on,
                                           "agreement": stage.agreement})))
    os.replace(staging, path)
    return path


def load_light_stage(directory: Path, model: str) -> LightStage | None:
    """The light stage fitted for `model` (name/version), or None when there is none (or it is for another)."""
    try:
        with np.load(directory / LIGHT_FILE) as saved:
            meta = json.loads(str(saved["meta"]))
            if meta.get("format") != FIT_FORMAT or meta.get("model") != model:
                return None
            return LightStage(saved["units"].astype(np.int64), saved["weights"].astype(np.float32),
                              float(saved["dot_weight"]), int(meta["fitted_on"]), float(meta["agreement"]))
    except (OSError, ValueError, KeyError):
        return None
