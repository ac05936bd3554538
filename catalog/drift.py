"""The drift rule, its one home: how far each event moves a user's vector (rates keyed by event name, and an
operator's overrides), and the move itself, replayed over an event log for training features and to seed user
vectors from history. The paramserver applies the same move live in native/ (fs_cuckoo_drift), which plans it
so that the guardrails judge it once; tests/catalog/test_drift.py pins that both agree."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from catalog.records import EVENT_NAMES
from errors import InvalidArgument

__all__ = ["RATES_BY_NAME", "DEFAULT_RATES", "parse_rates", "replay_drift", "drift_step"]

# Significant events move the user 10% of the way to the item; negative ones push away.
RATES_BY_NAME: dict[str, float] = {
    "impression": 0.0, "click": 0.05, "like": 0.10, "share": 0.10, "dwell": 0.05, "skip": -0.02, "dislike": -0.10,
}
DEFAULT_RATES: dict[int, float] = {EVENT_NAMES[name]: rate for name, rate in RATES_BY_NAME.items()}  # by EventType


def parse_rates(spec: str) -> dict[int, float]:
    """The default rates with an operator's overrides, `like=0.1,skip=-0.02` (event names), by EventType value."""
    rates = dict(DEFAULT_RATES)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name not in EVENT_NAMES:
            raise InvalidArgument("drift_rates", f"unknown event {name!r}, expected one of {', '.join(EVENT_NAMES)}")
        try:
            rate = float(value)
        except ValueError:
            raise InvalidArgument("drift_rates", f"rate for {name} is not a number: {value.strip()!r}") from None
        if not -1.0 <= rate <= 1.0:
            raise InvalidArgument("drift_rates", f"rate for {name} is expected in [-1, 1], got {rate}")
        rates[EVENT_NAMES[name]] = rate
    return rates


def drift_step(current: np.ndarray | None, target: np.ndarray, rate: float) -> np.ndarray | None:
    """One event's move, as the paramserver applies it: an unknown user (None) is created at the item's vector by
    a positive event; otherwise u <- normalise(u + rate (item - u)). None when nothing moves (a zero rate, an item
    without a vector, a negative event for an unknown user)."""
    if rate == 0.0 or not np.abs(target).sum() > 0:
        return None
    if current is None:
        return target.astype(np.float32, copy=True) if rate > 0 else None
    moved = current + rate * (target - current)
    norm = float(np.linalg.norm(moved))
    return (moved / norm).astype(np.float32) if norm > 1e-12 else None


def replay_drift(users: np.ndarray, items: np.ndarray, events: np.ndarray, item_vectors: np.ndarray,
                 rates: Mapping[int, float] = DEFAULT_RATES,
                 before: np.ndarray | None = None, start: Mapping[int, np.ndarray] | None = None,
                 ) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Replay drift over events in log order, exactly as the paramserver applies it: an unknown user is created
    at the item's vector by a positive event; otherwise u <- normalise(u + rate (item - u)).

    `item_vectors` is indexed by item id - 1 (a zero row: an item without a vector, which moves nothing).
    Returns every user's final vector, and, for the event indices in `before`, the user's vector just before
    that event (zeros for a user not yet known): what a feed served at that moment would have used. `start` holds
    vectors users already have (learned offline) before the first event."""
    table = np.asarray([rates.get(e, 0.0) for e in range(max(rates) + 1)], np.float32)
    state: dict[int, np.ndarray] = dict(start or {})
    wanted = {int(i): k for k, i in enumerate(before)} if before is not None else {}
    out = np.zeros((len(wanted), item_vectors.shape[1]), np.float32) if before is not None else None
    for i, (user, item, event) in enumerate(zip(users.tolist(), items.tolist(), events.tolist())):
        if out is not None and i in wanted and user in state:
            out[wanted[i]] = state[user]
        rate = float(table[event]) if 0 <= event < len(table) else 0.0
        if not 0 <= item - 1 < len(item_vectors):
            continue
        moved = drift_step(state.get(user), item_vectors[item - 1], rate)
        if moved is not None:
            state[user] = moved
    return state, out
