"""Each user's recent behaviour as the ranker sees it: their latest positive items by event time, how many events
they have, and when the last one was. Serving follows it from the change feed; training rebuilds it for every
example from the events strictly before that example, with the same rules (`History.add` in time order)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["RECENT", "POSITIVE_EVENTS", "History", "UserHistory", "snapshots"]

RECENT = 10  # latest positive items a user's cross features compare each candidate with (ranker/transitions.py)
POSITIVE_EVENTS = (2, 3, 4, 5)  # click, like, share, dwell (EventType values): what counts as the user wanting it


@dataclass
class UserHistory:
    """One user's latest positive items (item rows, oldest first, at most RECENT), events seen, last event time."""

    recent: list[int] = field(default_factory=list)
    events: int = 0
    last_ts: int = 0

    def rows(self) -> np.ndarray:
        """The latest positive items' rows, newest first."""
        return np.array(self.recent[::-1], np.int64)


class History:
    """Every user's UserHistory. Events must arrive in time order per user (the change feed's order is the log's;
    an event older than the user's last only counts toward their activity, it does not reorder the recent items)."""

    def __init__(self) -> None:
        self.users: dict[int, UserHistory] = {}

    def add(self, users: np.ndarray, items: np.ndarray, events: np.ndarray, timestamps: np.ndarray) -> None:
        """Take in events (users, item ids, EventType values, seconds since the epoch)."""
        positive = np.isin(events, POSITIVE_EVENTS)
        for user, item, good, ts in zip(users.tolist(), items.tolist(), positive.tolist(), timestamps.tolist()):
            entry = self.users.get(user)
            if entry is None:
                entry = self.users[user] = UserHistory()
            entry.events += 1
            if ts < entry.last_ts:
                continue
            entry.last_ts = ts
            if good:
                row = item - 1
                if row in entry.recent:
                    entry.recent.remove(row)
                entry.recent.append(row)
                if len(entry.recent) > RECENT:
                    del entry.recent[0]

    def of(self, user: int) -> UserHistory | None:
        return self.users.get(user)

    def forget(self, user: int) -> None:
        self.users.pop(user, None)

    def copy(self) -> History:
        """An independent copy (what the ranker saves while requests keep changing the original)."""
        copied = History()
        copied.users = {u: UserHistory(list(h.recent), h.events, h.last_ts) for u, h in self.users.items()}
        return copied

    def to_json(self) -> dict[str, list[int]]:
        return {str(u): [h.events, h.last_ts, *h.recent] for u, h in self.users.items()}

    @classmethod
    def from_json(cls, data: dict[str, list[int]]) -> History:
        history = cls()
        for user, (events, last_ts, *recent) in data.items():
            history.users[int(user)] = UserHistory(list(recent), int(events), int(last_ts))
        return history


def snapshots(users: np.ndarray, items: np.ndarray, events: np.ndarray, timestamps: np.ndarray,
              wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each index in `wanted` (into an event log sorted by time), what History held for that event's user from
    the events strictly earlier in time (an event at the same second is not yet known): (recent item rows
    [len(wanted), RECENT], newest first, -1 padded; event counts [len(wanted)])."""
    history = History()
    recent = np.full((len(wanted), RECENT), -1, np.int64)
    counts = np.zeros(len(wanted), np.int64)
    slot = {int(w): k for k, w in enumerate(wanted.tolist())}
    pending: dict[int, list[int]] = {}  # user -> their events at their latest second, not yet taken in
    for i, (user, ts) in enumerate(zip(users.tolist(), timestamps.tolist())):
        waiting = pending.get(user)
        if waiting and timestamps[waiting[0]] < ts:
            history.add(users[waiting], items[waiting], events[waiting], timestamps[waiting])
            waiting.clear()
        k = slot.get(i)
        if k is not None:
            entry = history.of(user)
            if entry is not None:
                rows = entry.rows()
                recent[k, :len(rows)] = rows
                counts[k] = entry.events
        pending.setdefault(user, []).append(i)
    return recent, counts
