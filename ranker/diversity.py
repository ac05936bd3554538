"""Feed diversity: the best items by score, with at most a share of the feed from any one category: a quarter, or
one and a half times the share the user's own latest items (for a new user, the catalog's interactions) give it."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = ["CATALOG_WEIGHT", "SLACK", "category_shares", "diversified_top_k"]

# The catalog's shares count as this many of the user's latest items (at most 10) in their category shares, so one
# item does not open a category to a third of a feed.
CATALOG_WEIGHT = 2.0
# A category may fill SLACK times its expected share (never less than a quarter). A flat quarter cost 5.2% of NDCG@20
# on MovieLens-100K's validation slice and 10.2% on -1M's; SLACK 1.5 costs 0.3% and 0.6%, where "the share and one
# more item" cost 0.6% and 1.7%, and 2 (0.2% and 0.1%) leaves a quarter of a feed to a share of an eighth
# (BENCHMARKS.md, issue 23, sixth session).
SLACK = 1.5


def category_shares(categories: np.ndarray, popularity: np.ndarray, recent: np.ndarray) -> dict[int, float]:
    """Each category's expected share of a feed: the user's `recent` items' categories, smoothed toward the catalog's
    interactions by category as the candidates (`categories`, their `popularity`) show them. With no recent items,
    the catalog's shares alone; with no interactions anywhere, the user's alone (or nothing: the plain quarter)."""
    weight = np.maximum(np.asarray(popularity, np.float64), 0)
    total = float(weight.sum())
    shares: dict[int, float] = {}
    catalog = CATALOG_WEIGHT if total > 0 else 0.0
    mass = len(recent) + catalog
    if mass == 0:
        return shares
    if total > 0:
        found, inverse = np.unique(np.asarray(categories, np.int64), return_inverse=True)
        for category, count in zip(found.tolist(), np.bincount(inverse, weights=weight).tolist()):
            shares[category] = catalog * count / total / mass
    for category in np.asarray(recent, np.int64).tolist():
        shares[category] = shares.get(category, 0.0) + 1 / mass
    return shares


def diversified_top_k(scores: np.ndarray, categories: np.ndarray, k: int,
                      shares: Mapping[int, float] | None = None) -> np.ndarray:
    """Indices of the best `k` scores, at most ceil(k/4) (and at least 2) per category when possible, or
    ceil(SLACK * k * share) for a category whose expected share (`shares`, from category_shares) makes that more."""
    base = max(2, math.ceil(k / 4))
    shares = shares or {}
    order = np.argsort(-scores, kind="stable")
    chosen: list[int] = []
    overflow: list[int] = []
    counts: dict[int, int] = {}
    for index in order.tolist():
        category = int(categories[index])
        cap = max(base, math.ceil(SLACK * k * shares.get(category, 0.0)))
        if counts.get(category, 0) < cap:
            counts[category] = counts.get(category, 0) + 1
            chosen.append(index)
            if len(chosen) == k:
                break
        else:
            overflow.append(index)
    chosen.extend(overflow[: k - len(chosen)])  # too few categories: fill with the best remaining
    return np.asarray(chosen, dtype=np.int64)
