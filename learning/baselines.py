"""Item-item baselines the served pipeline must beat, each tuned on a validation slice of the training period:
EASE (Steck, 2019: closed-form item-item regression) and item-kNN (cosine neighbours over the interaction matrix).

Both read a users x items matrix of positive interactions (scipy CSR, as `learning.vectors.interactions` makes) and
score a user's unseen items from the items they interacted with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from learning.metrics import mean_ndcg

__all__ = ["EASE_EXACT_ITEMS", "EASE_GRID", "KNN_GRID", "Ease", "ItemKnn", "fit_ease", "fit_item_knn", "tune_item_model"]

EASE_EXACT_ITEMS = 20_000  # a dense items x items inverse: 3.2 GB in float64 at 20,000 items
EASE_GRID = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
KNN_GRID = (20, 50, 100, 200, 400)


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    binary = matrix.astype(bool).astype(np.float64).tocsr()
    binary.eliminate_zeros()
    return binary


@dataclass
class Ease:
    """EASE's item-item weights over the `columns` it models (the most interacted-with items, all of them up to
    EASE_EXACT_ITEMS); an item outside them is never scored above zero."""

    weights: np.ndarray  # float32 [m, m], zero diagonal
    columns: np.ndarray  # int64 [m]: which of the catalog's columns the weights' rows and columns are
    items: int
    regularization: float

    def scores(self, history: sp.csr_matrix) -> np.ndarray:
        """[users, items] from each user's interactions (rows of a users x items matrix)."""
        out = np.zeros((history.shape[0], self.items), np.float32)
        out[:, self.columns] = _binary(history)[:, self.columns] @ self.weights
        return out


def fit_ease(matrix: sp.csr_matrix, regularization: float, max_items: int = EASE_EXACT_ITEMS) -> Ease:
    """B = I - P / diag(P) with P = (X'X + lambda I)^-1 over binary X; exact on catalogs up to `max_items`, above that
    on the `max_items` items with the most interactions (the rest are rarely the answer, and never EASE's)."""
    binary = _binary(matrix)
    counts = np.asarray(binary.sum(axis=0)).ravel()
    columns = np.arange(binary.shape[1]) if binary.shape[1] <= max_items else np.sort(np.argsort(-counts)[:max_items])
    x = binary[:, columns]
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += regularization
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return Ease(weights.astype(np.float32), columns.astype(np.int64), binary.shape[1], regularization)


@dataclass
class ItemKnn:
    """Each item's `neighbours` most cosine-similar items (over who interacted with them), as a sparse matrix: a
    user's score for an item is the summed similarity of the items they interacted with among its neighbours."""

    similarity: sp.csc_matrix  # [items, items]: column j holds item j's neighbours
    neighbours: int

    def scores(self, history: sp.csr_matrix) -> np.ndarray:
        return np.asarray((_binary(history) @ self.similarity).todense(), np.float32)


def fit_item_knn(matrix: sp.csr_matrix, neighbours: int, block: int = 2_048) -> ItemKnn:
    """Cosine similarity between item columns, only each item's `neighbours` best kept (computed a block of items at
    a time: no dense items x items matrix)."""
    binary = _binary(matrix).tocsc()
    norms = np.sqrt(np.asarray(binary.multiply(binary).sum(axis=0)).ravel())
    normalised = (binary @ sp.diags(1.0 / np.maximum(norms, 1e-12))).tocsc()
    n = binary.shape[1]
    keep = min(neighbours, max(n - 1, 1))
    rows, cols, values = [], [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        part = np.asarray((normalised.T @ normalised[:, start:stop]).todense())  # [n, block]
        part[np.arange(start, stop), np.arange(stop - start)] = 0.0  # an item is not its own neighbour
        best = np.argpartition(-part, keep - 1, axis=0)[:keep]  # [keep, block]
        picked = np.take_along_axis(part, best, axis=0)
        nonzero = picked > 0
        rows.append(best[nonzero])
        cols.append(np.broadcast_to(np.arange(start, stop), best.shape)[nonzero])
        values.append(picked[nonzero])
    similarity = sp.csc_matrix((np.concatenate(values).astype(np.float32),
                                (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return ItemKnn(similarity, neighbours)


Model = Ease | ItemKnn


def _scores_of(model: Model, train: sp.csr_matrix) -> Callable[[np.ndarray], np.ndarray]:
    return lambda rows: model.scores(train[rows])


def tune_item_model(fit: Callable[[sp.csr_matrix, float], Model], grid: Sequence[float], train: sp.csr_matrix,
                    validation: sp.csr_matrix, k: int = 20, block: int = 1_024,
                    report: Callable[[float, float], None] | None = None) -> tuple[float, dict[float, float]]:
    """The grid value with the best NDCG@k on the validation slice: each fitted on `train` (users x items), its
    full-catalog ranking of items unseen in `train` scored against `validation`'s positives."""
    rows = np.flatnonzero(np.diff(validation.indptr) > 0)
    results: dict[float, float] = {}
    for value in grid:
        results[value] = mean_ndcg(_scores_of(fit(train, value), train), train, validation, rows, k, block)
        if report is not None:
            report(value, results[value])
    return max(results, key=lambda v: results[v]), results
