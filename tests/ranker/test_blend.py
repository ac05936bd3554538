"""The ranker's scores blended with a prior (ranker/blend.py): popularity for a new user, what follows their latest
items for a user with a history."""

from __future__ import annotations

import numpy as np

from ranker.blend import cold_blend, follow_blend


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


def test_follow_weight_zero_keeps_the_scores_and_infinity_orders_by_what_follows() -> None:
    """At weight 0 the model's scores are returned as they are; at infinity the order is the transition shares'
    alone, candidates that never followed the user's items last."""
    scores = np.array([0.9, 0.1, 0.5, 0.3], np.float32)
    follows = np.array([0.0, 0.4, 0.05, 0.0], np.float32)
    assert follow_blend(scores, follows, 0.0) is scores
    assert np.argsort(-follow_blend(scores, follows, float("inf")), kind="stable").tolist() == [1, 2, 0, 3]


def test_a_user_whose_items_have_no_followers_keeps_the_models_order() -> None:
    """All shares 0 (nothing learned follows their items): no spread in the prior, so the model's order stands."""
    scores = np.array([0.2, 0.7, 0.4], np.float32)
    blended = follow_blend(scores, np.zeros(3, np.float32), 1.0)
    assert np.isfinite(blended).all() and np.argsort(-blended).tolist() == [1, 2, 0]


def test_following_lifts_a_candidate_by_its_share_not_by_the_scores_scale() -> None:
    """A candidate the model ranks second but that follows the user's items often moves ahead at weight 1, and the
    order does not change when every score is multiplied by 100."""
    scores = np.array([0.50, 0.48, 0.10, 0.05, 0.01], np.float32)
    follows = np.array([0.0, 0.3, 0.0, 0.0, 0.0], np.float32)
    first = np.argsort(-follow_blend(scores, follows, 1.0), kind="stable")
    assert first[0] == 1
    assert first.tolist() == np.argsort(-follow_blend(scores * 100, follows, 1.0), kind="stable").tolist()
