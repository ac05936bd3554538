"""The evaluation's scoring: one pass through the real Ranker gives the served feed and the score-ordered feed."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np

from learning.evaluation import _served
from tests.stack import ranker_for


def test_one_scoring_pass_gives_the_served_and_the_score_ordered_feeds(catalog, manifest) -> None:
    """The evaluation's single pass (every candidate's final score returned beside the feed) gives, for each user,
    exactly the top 20 that a second pass with the category cap off gives."""
    ranker = ranker_for(catalog, manifest)
    try:
        rng = np.random.default_rng(0)
        users = np.arange(1, 41)
        vectors = rng.normal(size=(41, catalog.dim)).astype(np.float32)
        known = np.r_[False, rng.random(40) < 0.8]  # a fifth of them asked for without a vector
        space = SimpleNamespace(users=vectors / np.linalg.norm(vectors, axis=1, keepdims=True), users_known=known)
        last, now = np.zeros(41, np.int64), [0.0]
        by_score = np.full((len(users), 20), -1, np.int64)
        served = _served(ranker, space, users, last, 20, now, io.StringIO(), undiversified=by_score)
        ranker.diversify = False
        second = _served(ranker, space, users, last, 20, now, io.StringIO())
        np.testing.assert_array_equal(by_score, second)
        assert (served != second).any()  # the cap did change some feeds: the two orders are not trivially equal
    finally:
        ranker.close()
