"""A new user's feed: the ranker's scores blended with popularity (ranker/cold.py)."""

from __future__ import annotations

import numpy as np

from ranker.cold import cold_blend


def test_weight_zero_keeps_the_scores_and_infinity_orders_by_popularity() -> None:
    """At weight 0 the scores are returned as they are; at infinity the order is popularity's alone."""
    scores = np.array([0.9, 0.1, 0.5, 0.3], np.float32)
    popularity = np.array([1, 50, 7, 0], np.float32)
    assert cold_blend(scores, popularity, 0.0) is scores
    assert np.argsort(-cold_blend(scores, popularity, float("inf"))).tolist() == [1, 2, 0, 3]


def test_the_blend_is_standardised_so_the_scores_scale_does_not_matter() -> None:
    """Scaling every score by 100 (another blend of the heads) leaves the blended order unchanged."""
    rng = np.random.default_rng(3)
    scores, popularity = rng.random(200).astype(np.float32), rng.integers(0, 500, 200).astype(np.float32)
    one = np.argsort(-cold_blend(scores, popularity, 1.0), kind="stable")
    hundred = np.argsort(-cold_blend(scores * 100, popularity, 1.0), kind="stable")
    assert one.tolist() == hundred.tolist()


def test_equal_scores_or_a_single_candidate_leave_nothing_undefined() -> None:
    """Equal scores (no spread) give popularity's order, never NaN; one candidate is returned as it is."""
    blended = cold_blend(np.full(3, 0.5, np.float32), np.array([2, 9, 4], np.float32), 1.0)
    assert np.isfinite(blended).all() and np.argsort(-blended).tolist() == [1, 2, 0]
    one = np.array([0.2], np.float32)
    assert cold_blend(one, np.array([3], np.float32), 1.0) is one
