"""The ranker's fitting trains only the feature columns its examples set, and that is the same training as over
all 4,736 columns: the same weights where a column is in use, exactly zero where none is."""

from __future__ import annotations

import numpy as np
import pytest

from learning.training import MIN_STEPS, _WideDeep, active_columns, fit_ranker
from ranker.features import CONTEXT_DIM, CROSS_DIM, FEATURE_DIM, HEADS, ITEM_DIM, USER_DIM

torch = pytest.importorskip("torch")


class SparseExamples:
    """Rows that set 300 random columns (two in the wide part's cross block) and leave every other column zero."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.rows = np.zeros((n, FEATURE_DIM), np.float32)
        self.used = np.sort(np.r_[rng.choice(FEATURE_DIM - CROSS_DIM, 298, replace=False),
                                  FEATURE_DIM - 5, FEATURE_DIM - 100])
        values = rng.normal(size=(n, len(self.used))) * (rng.random((n, len(self.used))) < 0.3)
        self.rows[:, self.used] = values.astype(np.float32)
        self.labels = (rng.random((n, len(HEADS))) < 0.2).astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def parts(self, index: np.ndarray) -> tuple[np.ndarray, ...]:
        rows = self.rows[index]
        edges = np.cumsum([0, USER_DIM, ITEM_DIM, CONTEXT_DIM, CROSS_DIM])
        return tuple(rows[:, a:b] for a, b in zip(edges[:-1], edges[1:]))

    def features(self, index: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        return self.rows[index] if columns is None else self.rows[index][:, columns]


def _every_column(examples: SparseExamples, epochs: int, batch: int, rng: np.random.Generator):
    """The plain loop: every one of the 4,736 columns trained."""
    net = _WideDeep(torch)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = rng.permutation(len(examples))
    batch = int(np.clip(len(order) * epochs // MIN_STEPS, 32, batch))
    for _ in range(epochs):
        for start in range(0, len(order), batch):
            index = order[start:start + batch]
            optimiser.zero_grad()
            loss_fn(net(torch.from_numpy(examples.features(index))), torch.from_numpy(examples.labels[index])).backward()
            optimiser.step()
    return net.weights()


def test_active_columns_are_the_columns_some_example_sets() -> None:
    """The scan over every example finds exactly the columns the examples set."""
    examples = SparseExamples(5_000)
    np.testing.assert_array_equal(active_columns(examples), examples.used)


def test_training_the_columns_in_use_takes_the_same_steps_as_training_all() -> None:
    """From the same seed, every weight of a column in use (deep and wide) and every later layer come out as the
    full-width loop leaves them (to float32 rounding); the first layer's and the wide part's other columns are 0."""
    examples = SparseExamples(2_000)
    torch.manual_seed(0)
    full = _every_column(examples, 1, 64, np.random.default_rng(0))
    torch.manual_seed(0)
    narrow = fit_ranker(examples, 1, 64, np.random.default_rng(0), None)
    used, unused = examples.used, np.setdiff1d(np.arange(FEATURE_DIM), examples.used)
    np.testing.assert_allclose(narrow.w1[used], full.w1[used], atol=1e-5)
    for name in ("b1", "w2", "b2", "w3", "b3"):
        np.testing.assert_allclose(getattr(narrow, name), getattr(full, name), atol=1e-5)
    cross = used[used >= FEATURE_DIM - CROSS_DIM] - (FEATURE_DIM - CROSS_DIM)
    assert narrow.wide is not None and full.wide is not None
    np.testing.assert_allclose(narrow.wide[cross], full.wide[cross], atol=1e-5)
    assert not narrow.w1[unused].any() and not np.delete(narrow.wide, cross, axis=0).any()

