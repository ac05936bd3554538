"""Learned user and item vectors: implicit-feedback factorisation (ALS from the `implicit` library), tuned on a
validation slice, with a ridge projection from content vectors that places items nobody has interacted with yet.

Vectors are written as wide as the content vectors (the served width every service runs at): a model with F
factors fills the first F coordinates and leaves the rest zero, so a retrain never changes a service's width.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from learning.metrics import mean_ndcg

__all__ = ["GRID", "QUICK_GRID", "AlsParams", "LearnedVectors", "continue_als", "fit_als", "fit_projection",
           "interactions", "per_user_holdout", "tune", "unit"]

# What counts as a positive interaction, and its confidence (EventType values): ratings of 3 and up, clicks,
# likes, shares and dwells; likes and shares count double.
CONFIDENCE = {2: 1.0, 3: 2.0, 4: 2.0, 5: 1.0}


@dataclass(frozen=True)
class AlsParams:
    factors: int = 64
    regularization: float = 1.0
    alpha: float = 5.0  # confidence = 1 + alpha * CONFIDENCE[event]
    iterations: int = 15


GRID = [AlsParams(f, r, a) for f, r, a in itertools.product((32, 64, 128), (0.1, 1.0, 10.0), (1.0, 5.0, 20.0))]
QUICK_GRID = [AlsParams(f, r, a) for f, r, a in itertools.product((32, 64), (1.0, 10.0), (5.0, 20.0))]
TUNING_USERS = 10_000  # validation users a tuning scores at most


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0).astype(np.float32)


def interactions(users: np.ndarray, items: np.ndarray, events: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Confidence-weighted user x item matrix of the positive events (row = user id, column = item id - 1)."""
    weight = np.zeros(max(CONFIDENCE) + 1, np.float32)
    for event, value in CONFIDENCE.items():
        weight[event] = value
    values = np.where((events >= 0) & (events < len(weight)), weight[np.clip(events, 0, len(weight) - 1)], 0)
    keep = values > 0
    matrix = sp.csr_matrix((values[keep], (users[keep], items[keep] - 1)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    return matrix


def _blas_limited() -> threadpool_limits:
    """One BLAS thread inside implicit's own threads (more would oversubscribe the cores). implicit is imported
    first, so that the BLAS it loads is among the libraries the limit applies to (else it warns about them)."""
    import implicit.cpu.als  # noqa: F401

    return threadpool_limits(1, "blas")


def _model(params: AlsParams, seed: int, iterations: int | None = None):
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(factors=params.factors, regularization=params.regularization, alpha=params.alpha,
                                   iterations=iterations or params.iterations, random_state=seed,
                                   num_threads=os.cpu_count() or 1, calculate_training_loss=False)


def fit_als(matrix: sp.csr_matrix, params: AlsParams, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(user factors [users, F], item factors [items, F]) of `matrix` (users x items)."""
    with _blas_limited():
        model = _model(params, seed)
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def continue_als(matrix: sp.csr_matrix, params: AlsParams, start: tuple[np.ndarray, np.ndarray], iterations: int = 2,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A few more sweeps from existing factors over more data: the coordinates stay those of `start` (what a ranker
    trained on `start`'s vectors relies on), while every user and item takes in the new interactions."""
    with _blas_limited():
        model = _model(params, seed, iterations)
        model.user_factors, model.item_factors = start[0].copy(), start[1].copy()
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def per_user_holdout(users: np.ndarray, timestamps: np.ndarray, share: float) -> np.ndarray:
    """Which events are each user's latest `share` by time (at least one, for users with two or more events)."""
    order = np.lexsort((np.arange(len(users)), timestamps, users))  # by user, then time, then log order
    held = np.zeros(len(users), bool)
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    for a, b in zip(starts.tolist(), ends.tolist()):
        n = b - a
        if n >= 2:
            k = min(max(round(n * share), 1), n - 1)
            held[order[b - k:b]] = True
    return held


def _score_users(users: np.ndarray, items: np.ndarray, rows: np.ndarray, seen: sp.csr_matrix, relevant: sp.csr_matrix,
                 k: int) -> float:
    return mean_ndcg(lambda part: users[part] @ items.T, seen, relevant, rows, k)


def tune(fit: sp.csr_matrix, validation: sp.csr_matrix, grid: list[AlsParams], k: int = 20, seed: int = 0,
         report=None) -> tuple[AlsParams, dict[AlsParams, float], tuple[np.ndarray, np.ndarray]]:
    """The grid point with the best NDCG@k on the validation slice (full-catalog ranking of items unseen in `fit`),
    every point's NDCG, and the best point's factors on `fit` (not fitted twice). Scored on TUNING_USERS of the
    validation users at most (a uniform sample: every point meets the same users)."""
    rows = np.flatnonzero(np.diff(validation.indptr) > 0)
    if len(rows) > TUNING_USERS:  # ranking the whole catalog for each of 40,000 users took 40 s of a first run
        rows = np.sort(np.random.default_rng(seed).choice(rows, TUNING_USERS, replace=False))
    results: dict[AlsParams, float] = {}
    best: tuple[AlsParams, tuple[np.ndarray, np.ndarray]] | None = None
    for params in grid:
        factors = fit_als(fit, params, seed)
        results[params] = _score_users(*factors, rows, fit, validation, k)
        if best is None or results[params] > results[best[0]]:
            best = (params, factors)
        if report is not None:
            report(params, results[params])
    if best is None:
        raise ValueError("tune: an empty grid")
    return best[0], results, best[1]


def fit_projection(content: np.ndarray, vectors: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """W [content dim, vector dim] minimising |content W - vectors|^2 + ridge |W|^2 over items with both."""
    d = content.shape[1]
    gram = content.T @ content + ridge * np.eye(d, dtype=np.float64)
    return np.linalg.solve(gram, content.T.astype(np.float64) @ vectors).astype(np.float32)


@dataclass
class LearnedVectors:
    """A trained space, `dim` wide: learned item vectors (rows = item id - 1; `known` marks items that had
    interactions), user vectors (rows = user id; `users_known`), the content projection and the cold-start vector."""

    items: np.ndarray
    known: np.ndarray
    users: np.ndarray
    users_known: np.ndarray
    projection: np.ndarray
    cold_start: np.ndarray
    params: AlsParams
    scale: float

    def describe(self) -> dict:
        return {**asdict(self.params), "scale": self.scale, "items_learned": int(self.known.sum()),
                "users_learned": int(self.users_known.sum())}
