"""Ranking metrics, written once: the best k of scored items, NDCG and hit rate of ranked lists, recall, NDCG of
scored groups, AUC, and one relevant item's discounted gain (the replay's)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

__all__ = ["auc", "best_columns", "discounts", "gain", "mean_ndcg", "ndcg_at", "ndcg_hr", "recall", "top_k"]


def discounts(k: int) -> np.ndarray:
    """The DCG discount of positions 1..k: 1 / log2(position + 1)."""
    return 1 / np.log2(np.arange(2, k + 2))


def gain(rank: int) -> float:
    """The discounted gain of the one relevant item found at 0-based `rank` (its NDCG, with one item wanted)."""
    return 1 / math.log2(rank + 2)


def best_columns(scores: np.ndarray, count: int) -> np.ndarray:
    """Each row's `count` highest columns (as a set, in no order). Rather than partition every whole row, a row's
    threshold is estimated from a sample of its columns, set low enough that at least `count` pass it (checked:
    rows where fewer pass are partitioned whole), and only the columns past it are partitioned."""
    rows, size = scores.shape
    sample = max(4 * count, 4_096)
    if sample * 2 >= size:  # a narrow catalog (MovieLens): one partition of each whole row
        return np.argpartition(-scores, count - 1, axis=1)[:, :count]
    columns = np.random.default_rng(0).choice(size, sample, replace=False)  # fixed: the same rows, the same set
    margin = int(count * sample / size * 1.5) + 16  # expected passing ~1.5 x count: short only by a wide miss
    threshold = np.empty(rows, scores.dtype)
    for a in range(0, rows, 64):  # in slices: small temporaries are reused, large ones cost page faults each time
        threshold[a:a + 64] = np.partition(scores[a:a + 64, columns], sample - 1 - margin, axis=1)[:, sample - 1 - margin]
    best = np.empty((rows, count), np.int64)
    for n in range(rows):
        passing = np.flatnonzero(scores[n] >= threshold[n])
        if len(passing) < count:
            best[n] = np.argpartition(-scores[n], count - 1)[:count]
        else:
            best[n] = passing[np.argpartition(-scores[n, passing], count - 1)[:count]]
    return best


def top_k(scores: np.ndarray, exclude: sp.csr_matrix, rows: np.ndarray, k: int) -> np.ndarray:
    """Each row's `k` best columns of `scores` [len(rows), items], best first, leaving out `exclude[rows]`."""
    scores = scores.copy()
    for n, row in enumerate(rows.tolist()):
        scores[n, exclude.indices[exclude.indptr[row]:exclude.indptr[row + 1]]] = -np.inf
    k = min(k, scores.shape[1])
    part = best_columns(scores, k)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _wanted(relevant: sp.csr_matrix, row: int) -> np.ndarray:
    return relevant.indices[relevant.indptr[row]:relevant.indptr[row + 1]]


def ndcg_hr(top: np.ndarray, relevant: sp.csr_matrix, rows: np.ndarray) -> tuple[float, float]:
    """Mean NDCG and hit rate of ranked lists `top` [len(rows), k] (column indices) against `relevant[rows]`, over
    the rows with something relevant (NaN when none has)."""
    k = top.shape[1]
    discount = discounts(k)
    ndcg, hits = [], []
    for n, row in enumerate(rows.tolist()):
        wanted = _wanted(relevant, row)
        if not len(wanted):
            continue
        hit = np.isin(top[n], wanted)
        ndcg.append(float((hit * discount).sum() / discount[:min(k, len(wanted))].sum()))
        hits.append(float(hit.any()))
    return (float(np.mean(ndcg)), float(np.mean(hits))) if ndcg else (float("nan"), float("nan"))


def recall(top: np.ndarray, relevant: sp.csr_matrix, rows: np.ndarray) -> float:
    """Mean share of each row's relevant items found in its list `top` (rows with none are left out)."""
    found = [np.isin(wanted, top[n]).mean() for n, row in enumerate(rows.tolist()) if len(wanted := _wanted(relevant, row))]
    return float(np.mean(found)) if found else float("nan")


def mean_ndcg(scores: Callable[[np.ndarray], np.ndarray], exclude: sp.csr_matrix, relevant: sp.csr_matrix,
              rows: np.ndarray, k: int = 20, block: int = 1_024) -> float:
    """NDCG@k of full-catalog rankings over `rows`, scored a block at a time (`scores(rows)` [len(rows), items]),
    leaving out `exclude`; rows with nothing relevant count as 0."""
    total = 0.0
    for start in range(0, len(rows), block):
        part = rows[start:start + block]
        total += float(np.nan_to_num(ndcg_hr(top_k(scores(part), exclude, part, k), relevant, part)[0])) * len(part)
    return total / max(len(rows), 1)


def ndcg_at(k: int, users: np.ndarray, scores: np.ndarray, relevance: np.ndarray) -> float:
    """Mean NDCG@k over users with at least one relevant item, each user's items ranked by score."""
    order = np.lexsort((-scores, users))
    users, relevance = users[order], relevance[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    discount = discounts(k)
    values = []
    for a, b in zip(starts, ends):
        rel = relevance[a:b]
        if rel.sum() == 0:
            continue
        ideal = np.sort(rel)[::-1][:k]
        values.append(float((rel[:k] * discount[: min(k, b - a)]).sum() / (ideal * discount[: len(ideal)]).sum()))
    return float(np.mean(values)) if values else float("nan")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties broken by order)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
