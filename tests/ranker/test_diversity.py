"""The feed's category cap: a quarter per category, calibrated up to what the user's latest items lean to."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.diversity import CATALOG_WEIGHT, SLACK, category_shares, diversified_top_k


def test_diversity_caps_each_category() -> None:
    """With k=8 the cap is 2 per category; only when categories run out does the best overflow fill in."""
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    categories = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
    chosen = diversified_top_k(scores, categories, 8)
    # 2 of category 0, 2 of 1, 2 of 2, the lone 3 (score 0.05 beats a third item of 0), then overflow
    assert chosen.tolist() == [0, 1, 4, 5, 7, 8, 9, 2]


def test_a_category_the_user_leans_to_may_hold_one_and_a_half_times_its_share() -> None:
    """A share of 0.3 at k=8 opens category 0 to ceil(1.5 * 2.4) = 4 items; the others keep the quarter (2)."""
    scores = np.linspace(1, 0, 12)
    categories = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    chosen = diversified_top_k(scores, categories, 8, {0: 0.3, 1: 0.05})
    assert chosen.tolist() == [0, 1, 2, 3, 5, 6, 8, 9]
    assert SLACK == 1.5
    assert diversified_top_k(scores, categories, 8, {}).tolist() == diversified_top_k(scores, categories, 8).tolist()


def test_shares_smooth_the_users_latest_items_toward_the_catalogs_interactions() -> None:
    """Ten latest items, eight of category 7, beside a catalog split evenly between 7 and 9: (8 + w/2) / (10 + w)
    for 7 and (2 + w/2) / (10 + w) for 9, w being CATALOG_WEIGHT; the shares add up to one."""
    categories = np.array([7, 7, 9, 9])
    popularity = np.array([3.0, 1.0, 2.0, 2.0])
    recent = np.array([7] * 8 + [9] * 2)
    shares = category_shares(categories, popularity, recent)
    w = CATALOG_WEIGHT
    assert shares[7] == pytest.approx((8 + w / 2) / (10 + w)) and shares[9] == pytest.approx((2 + w / 2) / (10 + w))
    assert sum(shares.values()) == pytest.approx(1.0)


def test_a_new_user_gets_the_catalogs_shares_and_an_empty_catalog_the_plain_quarter() -> None:
    """No latest items: the candidates' interactions by category alone; no interactions either: no shares, so
    every category keeps the quarter."""
    shares = category_shares(np.array([1, 1, 2]), np.array([6.0, 0.0, 2.0]), np.zeros(0, np.int64))
    assert shares == pytest.approx({1: 0.75, 2: 0.25})
    assert category_shares(np.array([1, 2]), np.zeros(2), np.zeros(0, np.int64)) == {}
    assert category_shares(np.array([1, 2]), np.zeros(2), np.array([2])) == {2: 1.0}
