"""The ranker's scores blended with a prior, both standardised over one request's candidates: popularity for a new
user, what follows their latest items for a user with a history."""

from __future__ import annotations

import numpy as np

__all__ = ["COLD_POPULARITY_WEIGHT", "FOLLOW_FLOOR", "FOLLOW_WEIGHT", "cold_blend", "follow_blend"]

# With no vector and no history the ranker's scores rest on the cold-start vector, the context and the items alone.
# The weight of popularity against them, chosen on MovieLens-100K's validation slice (BENCHMARKS.md, issue 23:
# 0.0578 with the scores alone, 0.0624 at 1, 0.0626 at 4, 0.0554 with popularity alone, against popularity's 0.0605).
COLD_POPULARITY_WEIGHT = 4.0

# The model reads the transition shares among 4,736 columns and gains little from them: on MovieLens-1M's
# validation slice the shares alone (0.1894 NDCG@20, diversified) ranked the served candidates better than the model
# (0.1662). Their weight beside its scores, on log shares (a share of 0 sits at the floor), chosen on the validation
# slices of MovieLens-100K and -1M (BENCHMARKS.md, issue 23, fifth session): at 0, 0.5, 1, 2 and 4, 0.2168, 0.2272,
# 0.2274, 0.2257 and 0.2209 on 100K; 0.1662, 0.1858, 0.1922, 0.1954 and 0.1948 on 1M.
FOLLOW_WEIGHT = 2.0
FOLLOW_FLOOR = 1e-3


def _blend(scores: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    """z(scores) + weight * z(prior); scores alone at weight 0 (or one candidate), the prior alone at infinity."""
    if weight == 0 or len(scores) < 2:
        return scores
    standard = _standard(prior.astype(np.float64))
    if np.isinf(weight):
        return standard.astype(np.float32)
    return (_standard(scores.astype(np.float64)) + weight * standard).astype(np.float32)


def cold_blend(scores: np.ndarray, popularity: np.ndarray, weight: float) -> np.ndarray:
    """A new user's feed: z(scores) + weight * z(log(1 + popularity)) over one request's candidates. Standardised so
    that the weight does not depend on the heads' scale."""
    return _blend(scores, np.log1p(np.maximum(popularity, 0).astype(np.float64)), weight)


def follow_blend(scores: np.ndarray, follows: np.ndarray, weight: float) -> np.ndarray:
    """A known user's feed: z(scores) + weight * z(log(FOLLOW_FLOOR + follows)), `follows` being each candidate's
    decayed transition share from the user's latest items (Transitions.scores, first column). Candidates that all
    follow equally (none at all, for a user whose items have no followers) leave the scores' order as it was."""
    return _blend(scores, np.log(FOLLOW_FLOOR + np.maximum(follows, 0).astype(np.float64)), weight)


def _standard(values: np.ndarray) -> np.ndarray:
    spread = float(values.std())
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
