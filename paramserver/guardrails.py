"""Per-user guardrails on real-time drift: a cap on vector updates per minute (a burst of bots, a runaway client
loop) and a bound on how far a vector may travel in an hour: the distance of its direction from where it pointed
when the hour began.

The bound is on the displacement, not the path: what a flood of fake likes does is drag a user somewhere else,
and the displacement measures exactly that. A person rating 200 films in an hour (MovieLens users do) zigzags
around their own taste; the path of those moves passes any bound that would stop an attack long before the
displacement does (on MovieLens-100K's replay a path bound of 1.5 held back 2,702 of 3,597 real moves).

Windows are fixed (the current minute, the current hour of the clock), so each user costs a few numbers and the
vector where their hour began, not a history. They survive a restart: the paramserver logs each allowed move with
the time it was judged at (replayed through `replay`) and saves the windows in its snapshots (`state`, `restore`).

The clock is the event's own for a backfill of real history (an admin's timestamped events: months of a user's
likes are not a burst because they arrive in a minute), never later than now; a live event's is the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from feedserve.v1 import common_pb2

__all__ = ["Guardrails", "DEFAULT_UPDATES_PER_MINUTE", "DEFAULT_TRAVEL_PER_HOUR"]

DEFAULT_UPDATES_PER_MINUTE = 30
DEFAULT_TRAVEL_PER_HOUR = 1.5  # distance in the unit-length users' space: a right angle is 1.41, a half turn 2.0
_EXPIRE_EVERY = 10_000  # checks between sweeps of users idle for more than an hour


def _direction(vector: np.ndarray) -> np.ndarray:
    """The vector at unit length: the ranker reads a user's direction, and a user created at an item's vector has
    that item's length (0.5 to 3 in a learned space) until its first move normalises it, which is no travel."""
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


@dataclass
class _Window:
    minute: int = -1
    updates: int = 0
    hour: int = -1
    start: np.ndarray | None = None  # its direction when this hour's first move came (None: not yet known)


@dataclass
class Guardrails:
    """`updates_per_minute` and `travel_per_hour` of 0 switch that guardrail off."""

    updates_per_minute: int = DEFAULT_UPDATES_PER_MINUTE
    travel_per_hour: float = DEFAULT_TRAVEL_PER_HOUR
    clock: Callable[[], float] = time.time
    held: dict[int, int] = field(default_factory=lambda: {common_pb2.GUARDRAIL_RATE: 0, common_pb2.GUARDRAIL_TRAVEL: 0})
    _users: dict[int, _Window] = field(default_factory=dict)
    _checks: int = 0

    def moment(self, event_time: float = 0) -> float:
        """The time a move is judged at: the event's own for a backfill (`event_time`, never later than now), the
        clock's for a live event (0)."""
        return min(event_time, self.clock()) if event_time > 0 else self.clock()

    def _window(self, user: int, at: float, current: np.ndarray | None) -> _Window:
        minute, hour = int(at // 60), int(at // 3600)
        window = self._users.get(user)
        if window is None:
            window = self._users[user] = _Window()
        if window.minute != minute:
            window.minute, window.updates = minute, 0
        if window.hour != hour:
            window.hour, window.start = hour, None
        if window.start is None and current is not None:
            window.start = _direction(current)
        return window

    def check(self, user: int, current: np.ndarray | None, moved: np.ndarray | None, event_time: float = 0,
              at: float | None = None) -> int:
        """GUARDRAIL_NONE and the move counted, or the guardrail that holds it back (nothing counted). `current` is
        the user's vector before the move (None: not yet known), `moved` where the move would take it (None: it
        moves nothing); `event_time` when the event happened (0: now, a live event), or `at`, the time already
        resolved by `moment`. Callers serialise calls (the paramserver's writer lock)."""
        now = self.moment(event_time) if at is None else at
        hour = int(now // 3600)
        window = self._window(user, now, current)
        travelled = 0.0
        if moved is not None and window.start is not None:
            travelled = float(np.linalg.norm(_direction(moved) - window.start))
        verdict = common_pb2.GUARDRAIL_NONE
        if self.updates_per_minute and window.updates >= self.updates_per_minute:
            verdict = common_pb2.GUARDRAIL_RATE
        elif self.travel_per_hour and travelled > self.travel_per_hour:
            verdict = common_pb2.GUARDRAIL_TRAVEL
        if verdict == common_pb2.GUARDRAIL_NONE:
            window.updates += 1
            if window.start is None and moved is not None:  # created by this move: measured from where it began
                window.start = _direction(moved)
        else:
            self.held[verdict] += 1
        self._checks += 1
        if self._checks % _EXPIRE_EVERY == 0:
            self._users = {u: w for u, w in self._users.items() if w.hour >= hour - 1}
        return verdict

    def replay(self, user: int, current: np.ndarray | None, moved: np.ndarray | None, at: float) -> None:
        """Count a move that `check` allowed at `at` (the paramserver's log, replayed after a restart)."""
        window = self._window(user, at, current)
        window.updates += 1
        if window.start is None and moved is not None:
            window.start = _direction(moved)

    def state(self) -> dict[str, np.ndarray]:
        """The windows as arrays, for a snapshot (`restore` reads them back)."""
        users = list(self._users.items())
        starts = [w.start for _, w in users if w.start is not None]
        dim = len(starts[0]) if starts else 0
        start = np.full((len(users), dim), np.nan, np.float32)
        for row, (_, window) in enumerate(users):
            if window.start is not None and dim:
                start[row] = window.start
        return {"guardrail_users": np.array([u for u, _ in users], np.int64),
                "guardrail_minutes": np.array([w.minute for _, w in users], np.int64),
                "guardrail_updates": np.array([w.updates for _, w in users], np.int64),
                "guardrail_hours": np.array([w.hour for _, w in users], np.int64),
                "guardrail_starts": start,
                "guardrail_started": np.array([w.start is not None for _, w in users], bool)}

    def restore(self, saved: Mapping[str, np.ndarray]) -> None:
        """Take back the windows `state` saved (a snapshot without them leaves these as they are)."""
        if "guardrail_users" not in saved:
            return
        starts, started = saved["guardrail_starts"], saved["guardrail_started"]
        for row, user in enumerate(saved["guardrail_users"].tolist()):
            self._users[user] = _Window(int(saved["guardrail_minutes"][row]), int(saved["guardrail_updates"][row]),
                                        int(saved["guardrail_hours"][row]),
                                        starts[row].copy() if started[row] else None)

    def forget(self, user: int) -> None:
        """Drop what is remembered of a user (a deleted user leaves nothing behind)."""
        self._users.pop(user, None)

    def remembers(self, user: int) -> bool:
        return user in self._users
