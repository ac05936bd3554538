"""Ranking metrics (learning/metrics.py) on hand-computed cases: each is written once and every evaluation uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from learning.metrics import auc, best_columns, gain, mean_ndcg, ndcg_at, ndcg_hr, recall, top_k


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


def test_the_sampled_selection_finds_each_rows_best_columns() -> None:
    """The builder's pool (a threshold estimated from a sample of columns, then a partition of what passes) is
    each row's exact best set, also for a row that is mostly -inf and a row whose best are all in one corner."""
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((20, 50_000)).astype(np.float32)
    scores[1, 150:] = -np.inf
    scores[2, :300] += 100.0  # the best 300 sit together, where a sample of columns may miss most of them
    best = best_columns(scores, 200)
    expected = np.argpartition(-scores, 199, axis=1)[:, :200]
    assert [sorted(row) for row in best[[0, 2, *range(3, 20)]].tolist()] == \
        [sorted(row) for row in expected[[0, 2, *range(3, 20)]].tolist()]
    assert set(range(150)) <= set(best[1].tolist())  # the 150 finite ones, then any -inf


def test_top_k_over_a_wide_catalog_equals_a_full_sort() -> None:
    """On a catalog wide enough for the sampled selection, top_k gives each row's best k in order, as a full sort
    of the row (with seen items left out) does."""
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((8, 60_000)).astype(np.float32)
    seen = _relevant([[int(np.argmax(row))] for row in scores], 60_000)
    expected = []
    for n, row in enumerate(scores):
        masked = row.copy()
        masked[seen.indices[seen.indptr[n]:seen.indptr[n + 1]]] = -np.inf
        expected.append(np.argsort(-masked, kind="stable")[:20].tolist())
    assert top_k(scores, seen, np.arange(8), 20).tolist() == expected
