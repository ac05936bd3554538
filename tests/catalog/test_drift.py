"""The drift rule: replayed drift matches the paramserver's native drift, event for event; rates by event name."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.drift import DEFAULT_RATES, RATES_BY_NAME, parse_rates, replay_drift
from catalog.records import EVENT_NAMES
from errors import InvalidArgument
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


def test_rates_are_keyed_by_event_name_and_overrides_name_the_field() -> None:
    """`like=0.2,skip=-0.05` overrides those two rates by name and keeps the rest; an unknown event, a rate that is
    not a number or one outside [-1, 1] is INVALID_ARGUMENT naming drift_rates."""
    rates = parse_rates("like=0.2, skip=-0.05")
    assert rates[EVENT_NAMES["like"]] == 0.2 and rates[EVENT_NAMES["skip"]] == -0.05
    assert rates[EVENT_NAMES["click"]] == RATES_BY_NAME["click"] == DEFAULT_RATES[EVENT_NAMES["click"]]
    for spec, message in (("purchase=0.1", "unknown event"), ("like=fast", "not a number"), ("like=2", r"\[-1, 1\]")):
        with pytest.raises(InvalidArgument, match=message) as raised:
            parse_rates(spec)
        assert raised.value.field == "drift_rates"
