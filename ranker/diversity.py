"""Feed diversity: the best items by score, with at most a share of the feed from any one category."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["diversified_top_k"]


def diversified_top_k(scores: np.ndarray, categories: np.ndarray, k: int) -> np.ndarray:
    """Indices of the best `k` scores, at most ceil(k/4) (and at least 2) per category when possible."""
    cap = max(2, math.ceil(k / 4))
    order = np.argsort(-scores, kind="stable")
    chosen: list[int] = []
    overflow: list[int] = []
    counts: dict[int, int] = {}
    for index in order.tolist():
        category = int(categories[index])
        if counts.get(category, 0) < cap:
            counts[category] = counts.get(category, 0) + 1
            chosen.append(index)
            if len(chosen) == k:
                break
        else:
            overflow.append(index)
    chosen.extend(overflow[: k - len(chosen)])  # too few categories: fill with the best remaining
    return np.asarray(chosen, dtype=np.int64)
