"""A new user's feed: the ranker's scores blended with the candidates' popularity, both standardised."""

from __future__ import annotations

import numpy as np

__all__ = ["COLD_POPULARITY_WEIGHT", "cold_blend"]

# With no vector and no history the ranker's scores rest on the cold-start vector, the context and the items alone.
# The weight of popularity against them, chosen on MovieLens-100K's validation slice (BENCHMARKS.md, issue 23:
# 0.0578 with the scores alone, 0.0624 at 1, 0.0626 at 4, 0.0554 with popularity alone, against popularity's 0.0605).
COLD_POPULARITY_WEIGHT = 4.0


def cold_blend(scores: np.ndarray, popularity: np.ndarray, weight: float) -> np.ndarray:
    """z(scores) + weight * z(log(1 + popularity)) over one request's candidates; scores alone where weight is 0,
    and popularity alone where it is infinite. Standardised so that the weight does not depend on the heads' scale."""
    if weight == 0 or len(scores) < 2:
        return scores
    prior = _standard(np.log1p(np.maximum(popularity, 0).astype(np.float64)))
    if np.isinf(weight):
        return prior.astype(np.float32)
    return (_standard(scores.astype(np.float64)) + weight * prior).astype(np.float32)


def _standard(values: np.ndarray) -> np.ndarray:
    spread = float(values.std())
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
