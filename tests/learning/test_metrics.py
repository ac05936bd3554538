"""Ranking metrics (learning/metrics.py) on hand-computed cases: each is written once and every evaluation uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from learning.metrics import auc, gain, mean_ndcg, ndcg_at, ndcg_hr, recall, top_k


def _relevant(rows: list[list[int]], items: int) -> sp.csr_matrix:
    indptr = np.cumsum([0, *map(len, rows)])
    return sp.csr_matrix((np.ones(indptr[-1]), np.concatenate(rows or [[]]).astype(np.int64), indptr),
                         shape=(len(rows), items))


def test_auc_and_grouped_ndcg_on_known_cases() -> None:
    """AUC by rank sums (0.75 here); NDCG@k of scored groups is 1 for a perfect order and less reversed."""
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    users = np.array([1, 1, 1, 2, 2])
    perfect = ndcg_at(20, users, np.array([3, 2, 1, 2, 1.0]), np.array([1, 0, 0, 1, 0]))
    reversed_ = ndcg_at(20, users, np.array([1, 2, 3, 1, 2.0]), np.array([1, 0, 0, 1, 0]))
    assert perfect == pytest.approx(1.0) and reversed_ < perfect


def test_ndcg_hit_rate_and_recall_of_ranked_lists() -> None:
    """Row 0 finds its one item second (NDCG 1/log2 3, a hit), row 1 finds one of two first (NDCG 1/(1 + 1/log2 3)),
    row 2 wants nothing and is left out; recall counts the share of each row's items found."""
    top = np.array([[5, 1], [2, 7], [0, 3]])
    relevant = _relevant([[1], [2, 4], []], 8)
    ndcg, hr = ndcg_hr(top, relevant, np.arange(3))
    expected = (1 / math.log2(3) + 1 / (1 + 1 / math.log2(3))) / 2
    assert ndcg == pytest.approx(expected) and hr == 1.0
    assert recall(top, relevant, np.arange(3)) == pytest.approx((1 + 0.5) / 2)
    assert gain(1) == pytest.approx(1 / math.log2(3))


def test_top_k_leaves_out_the_excluded_and_mean_ndcg_scores_in_blocks() -> None:
    """The best unseen columns come best first; NDCG over rows scored one block at a time equals one pass."""
    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    seen = _relevant([[0], []], 4)
    np.testing.assert_array_equal(top_k(scores, seen, np.arange(2), 2), [[1, 3], [3, 2]])
    relevant = _relevant([[3], [2]], 4)
    whole = mean_ndcg(lambda rows: scores[rows], seen, relevant, np.arange(2), k=2)
    blocks = mean_ndcg(lambda rows: scores[rows], seen, relevant, np.arange(2), k=2, block=1)
    assert whole == pytest.approx(blocks) == pytest.approx((1 / math.log2(3) + 1 / math.log2(3)) / 2)
