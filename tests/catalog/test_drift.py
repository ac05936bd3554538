"""Replayed drift matches the paramserver's native drift, event for event."""

from __future__ import annotations

import numpy as np

from catalog.drift import DEFAULT_RATES, replay_drift
from native import CuckooTable


def test_replay_matches_the_native_table() -> None:
    """The same events through CuckooTable.drift and through replay_drift leave the same user vectors."""
    rng = np.random.default_rng(4)
    items = rng.standard_normal((30, 16)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    n = 400
    users, item_ids = rng.integers(1, 9, n), rng.integers(1, 31, n)
    events = rng.choice([1, 2, 3, 4, 5, 6, 7], n)
    table = CuckooTable(16)
    for u, i, e in zip(users, item_ids, events):
        table.drift(np.array([u]), items[i - 1][None], np.array([DEFAULT_RATES[int(e)]], np.float32))
    final, before = replay_drift(users, item_ids, events, items, before=np.array([0, n - 1]))
    for user, vector in final.items():
        np.testing.assert_allclose(table.lookup([user])[0][0], vector, atol=1e-5)
    assert not before[0].any()  # nobody is known before the first event
    assert set(final) == {int(k) for k in table.items()[0]}
