"""The baselines the served pipeline is measured against reproduce known properties on tiny hand-made data: EASE's
closed form is the per-item ridge regression it claims, item-kNN finds the items that co-occur, and GRU4Rec learns a
deterministic next item."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from learning.baselines import fit_ease, fit_item_knn, tune_item_model


def _matrix(rows: list[list[int]], items: int) -> sp.csr_matrix:
    users = [u for u, row in enumerate(rows) for _ in row]
    columns = [i for row in rows for i in row]
    return sp.csr_matrix((np.ones(len(columns), np.float32), (users, columns)), shape=(len(rows), items))


class TestEase:
    def test_closed_form_equals_a_direct_ridge_solve_per_item(self) -> None:
        """Each column of B is the ridge regression of that item on every other item (B_jj = 0 by construction)."""
        rng = np.random.default_rng(0)
        x = (rng.random((60, 8)) < 0.35).astype(np.float64)
        lam = 3.0
        ease = fit_ease(sp.csr_matrix(x), lam)
        for j in range(8):
            others = [i for i in range(8) if i != j]
            a = x[:, others]
            direct = np.linalg.solve(a.T @ a + lam * np.eye(7), a.T @ x[:, j])
            np.testing.assert_allclose(ease.weights[others, j], direct, rtol=1e-4, atol=1e-5)
            assert ease.weights[j, j] == 0.0

    def test_above_the_exact_size_only_the_most_used_items_are_modelled(self) -> None:
        """With max_items below the catalog, the least interacted-with item is never scored."""
        matrix = _matrix([[0, 1, 2], [0, 1], [0, 2], [1, 2, 3]], 4)
        ease = fit_ease(matrix, 1.0, max_items=3)
        assert sorted(ease.columns.tolist()) == [0, 1, 2]
        assert np.all(ease.scores(matrix)[:, 3] == 0)


class TestItemKnn:
    def test_an_items_neighbour_is_the_item_it_always_comes_with(self) -> None:
        """Items 0 and 1 are always taken together, 2 and 3 too: each one's single neighbour is its partner."""
        matrix = _matrix([[0, 1], [0, 1], [2, 3], [2, 3], [0, 1, 2]], 4)
        knn = fit_item_knn(matrix, neighbours=1)
        dense = knn.similarity.toarray()
        assert [int(np.argmax(dense[:, j])) for j in range(4)] == [1, 0, 3, 2]
        scores = knn.scores(_matrix([[0]], 4))
        assert int(np.argmax(scores[0])) == 1

    def test_tuning_picks_the_setting_with_the_best_validation_ndcg(self) -> None:
        """tune_item_model reports every setting and returns the best-scoring one."""
        train = _matrix([[0, 1], [0, 1], [2, 3], [2, 3], [0], [2]], 4)
        validation = _matrix([[], [], [], [], [1], [3]], 4)
        best, results = tune_item_model(lambda m, v: fit_item_knn(m, int(v)), [1, 3], train, validation, k=1)
        assert set(results) == {1, 3}
        assert results[best] == max(results.values()) == 1.0


class TestGru4Rec:
    def test_it_learns_a_deterministic_next_item(self) -> None:
        """Trained on users who all walk the cycle 0 -> 1 -> 2 -> 3 -> 4 -> 0, it predicts the item after the last."""
        pytest.importorskip("torch")
        from learning.sequential import SequentialParams, fit_gru4rec

        cycle = np.arange(5)
        histories = {u: np.tile(cycle, 6)[u % 5:u % 5 + 20] for u in range(40)}
        model, _ = fit_gru4rec(histories, 5, SequentialParams(dim=16, layers=1, max_length=12, dropout=0.0,
                                                         learning_rate=5e-3, batch=16, epochs=40))
        for last in range(5):
            history = np.array([(last - 3 + i) % 5 for i in range(4)])
            assert int(np.argmax(model.scores([history])[0])) == (last + 1) % 5
