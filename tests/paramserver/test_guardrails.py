"""Guardrails on real-time drift: a burst past the per-user cap, and a vector that has moved its hourly bound away
from where the hour found it, are held back, the acknowledgement says which, and nothing moves or is logged."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from errors import InvalidArgument
from feedserve.v1 import common_pb2, paramserver_pb2
from mesh.methods import HeapOutputs
from paramserver.guardrails import Guardrails
from tests.stack import paramserver_core

USER = paramserver_pb2.TABLE_USER
LIKE = common_pb2.EVENT_TYPE_LIKE


def _steady(items: np.ndarray, user: np.ndarray, rate: float = 0.1) -> int:
    """An item id whose like moves `user` about 0.12 (two such moves stay within a bound of 0.3) and whose direction
    lies far from the user's (enough of them pass it)."""
    unit = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    moved = user + rate * (items - user)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    steps = np.linalg.norm(moved - user, axis=1)
    fit = np.abs(steps - 0.12)
    fit[np.linalg.norm(unit - user, axis=1) < 1.0] = np.inf
    return int(np.argmin(fit)) + 1


class Clock:
    """A hand-set clock: the windows turn when the test says so, never by waiting."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _drift(core, user: int, item: int, event: int = LIKE) -> paramserver_pb2.DriftResponse:
    return core.drift(paramserver_pb2.DriftRequest(user_id=user, item_id=item, event=event), {}, HeapOutputs())


def _vector(core, user: int) -> np.ndarray:
    vectors, found = core.tables[USER].lookup(np.array([user], np.int64))
    assert found[0]
    return vectors[0].copy()


def _smallest_step(items: np.ndarray, user: np.ndarray, rate: float = 0.1) -> int:
    """The item id a like toward which would move `user` least."""
    moved = user + rate * (items - user)
    moved /= np.linalg.norm(moved, axis=1, keepdims=True)
    steps = np.linalg.norm(moved - user, axis=1)
    steps[np.abs(items).sum(axis=1) == 0] = np.inf
    return int(np.argmin(steps)) + 1


class TestRateCap:
    def test_a_burst_past_the_cap_is_held_back_and_the_ack_says_so(self, catalog, tmp_path: Path) -> None:
        """With a cap of 5 moves a minute, the sixth like in the minute is held back (GUARDRAIL_RATE): the vector
        stays where the fifth left it and no WAL record is written; the next minute moves again."""
        clock = Clock()
        core = paramserver_core(catalog, tmp_path, guardrails=Guardrails(5, 0, clock))
        user = int(catalog.user_ids[0])
        try:
            for item in range(1, 6):
                reply = _drift(core, user, item)
                assert reply.applied and reply.held_back == common_pb2.GUARDRAIL_NONE
            before, records = _vector(core, user), core.wal.last_seq
            burst = _drift(core, user, 6)
            assert not burst.applied and burst.held_back == common_pb2.GUARDRAIL_RATE
            np.testing.assert_array_equal(_vector(core, user), before)
            assert core.wal.last_seq == records
            other = int(catalog.user_ids[1])
            assert _drift(core, other, 6).applied  # the cap is per user
            clock.now += 60
            assert _drift(core, user, 6).applied
            assert core.guardrails.held[common_pb2.GUARDRAIL_RATE] == 1
        finally:
            core.close()


class TestRestart:
    @pytest.mark.parametrize("snapshot", [False, True], ids=["wal", "snapshot"])
    def test_a_restart_keeps_the_minutes_count(self, catalog, tmp_path: Path, snapshot: bool) -> None:
        """Five moves in a minute (the cap), a restart (from the WAL alone, or from a snapshot taken after them):
        the sixth in the same minute is still held back, and the next minute moves again."""
        clock = Clock()
        user = int(catalog.user_ids[0])
        core = paramserver_core(catalog, tmp_path, guardrails=Guardrails(5, 0, clock))
        try:
            assert all(_drift(core, user, item).applied for item in range(1, 6))
            if snapshot:
                core.snapshot(None, {}, None)
        finally:
            core.close()
        again = paramserver_core(catalog, tmp_path, guardrails=Guardrails(5, 0, clock))
        try:
            assert _drift(again, user, 6).held_back == common_pb2.GUARDRAIL_RATE
            clock.now += 60
            assert _drift(again, user, 6).applied
        finally:
            again.close()

    @pytest.mark.parametrize("snapshot", [False, True], ids=["wal", "snapshot"])
    def test_a_restart_keeps_where_the_hour_began(self, catalog, tmp_path: Path, snapshot: bool) -> None:
        """Two moves toward a far item, a restart, then forty more: the vector stops within the bound of where the
        hour found it before the restart, not of where the restart found it."""
        clock = Clock()
        user = int(catalog.user_ids[0])
        core = paramserver_core(catalog, tmp_path, guardrails=Guardrails(0, 0.3, clock))
        start = _vector(core, user)
        far = _steady(catalog.item_vectors, start)
        try:
            assert _drift(core, user, far).applied and _drift(core, user, far).applied
            if snapshot:
                core.snapshot(None, {}, None)
            before = np.linalg.norm(_vector(core, user) - start)
        finally:
            core.close()
        again = paramserver_core(catalog, tmp_path, guardrails=Guardrails(0, 0.3, clock))
        try:
            held = [_drift(again, user, far).held_back for _ in range(40)]
            assert common_pb2.GUARDRAIL_TRAVEL in held and before > 0.05
            assert np.linalg.norm(_vector(again, user) - start) <= 0.3 + 1e-5
        finally:
            again.close()

    def test_windows_round_trip_through_their_arrays(self) -> None:
        """state() then restore() gives back every window: its minute, updates, hour and start (or none)."""
        clock = Clock()
        rails = Guardrails(0, 0.3, clock)
        rails.check(1, None, np.array([1.0, 0.0], np.float32))
        rails.check(2, None, None)
        copy = Guardrails(0, 0.3, clock)
        copy.restore(rails.state())
        for user in (1, 2):
            mine, theirs = copy._users[user], rails._users[user]
            assert (mine.minute, mine.updates, mine.hour) == (theirs.minute, theirs.updates, theirs.hour)
        np.testing.assert_array_equal(copy._users[1].start, rails._users[1].start)
        assert copy._users[2].start is None


class TestTravelBound:
    def test_a_vector_that_has_travelled_its_hourly_bound_stops_until_the_next_hour(self, catalog, tmp_path: Path) -> None:
        """Likes toward a far item move the vector until its distance from where the hour found it would pass the
        bound; then they are held back (GUARDRAIL_TRAVEL); when the hour turns the vector moves again."""
        clock = Clock()
        core = paramserver_core(catalog, tmp_path, guardrails=Guardrails(0, 0.3, clock))
        user = int(catalog.user_ids[0])
        start = _vector(core, user)
        far = int(np.argmin(catalog.item_vectors @ start)) + 1
        try:
            replies = [_drift(core, user, far) for _ in range(40)]
            held = [r.held_back for r in replies]
            assert common_pb2.GUARDRAIL_TRAVEL in held
            first = held.index(common_pb2.GUARDRAIL_TRAVEL)
            assert all(r.applied for r in replies[:first]) and not any(r.applied for r in replies[first:])
            assert np.linalg.norm(_vector(core, user) - start) <= 0.3 + 1e-5
            near = _smallest_step(catalog.item_vectors, _vector(core, user))
            clock.now += 3600
            assert _drift(core, user, near).applied
        finally:
            core.close()

    def test_a_long_path_that_stays_near_its_start_is_not_held_back(self) -> None:
        """Forty moves back and forth between two points 0.1 apart (a path of 4.0, as a person rating 200 films
        an hour zigzags around their taste) pass a bound of 0.3; one move 0.35 away from the hour's start is held."""
        clock = Clock()
        rails = Guardrails(0, 0.3, clock)
        here = np.array([1.0, 0.0], np.float32)
        there = np.array([np.cos(0.1), np.sin(0.1)], np.float32)
        for n in range(40):
            current, moved = (here, there) if n % 2 == 0 else (there, here)
            assert rails.check(7, current, moved) == common_pb2.GUARDRAIL_NONE
        away = np.array([np.cos(0.35), np.sin(0.35)], np.float32)  # 0.35 from where the hour began
        assert rails.check(7, there, away) == common_pb2.GUARDRAIL_TRAVEL
        clock.now += 3600
        assert rails.check(7, there, away) == common_pb2.GUARDRAIL_NONE  # a new hour measures from there: 0.25

    def test_a_user_created_this_hour_is_measured_from_where_they_began(self) -> None:
        """A user unknown before the hour is created at an item (no travel); later moves count from there."""
        rails = Guardrails(0, 0.3, Clock())
        origin = np.array([1.0, 0.0], np.float32)
        assert rails.check(9, None, origin) == common_pb2.GUARDRAIL_NONE
        assert rails.check(9, origin, np.array([0.0, 1.0], np.float32)) == common_pb2.GUARDRAIL_TRAVEL

    def test_a_user_created_at_a_long_item_vector_has_not_travelled_when_normalised(self) -> None:
        """A user created at an item's vector of length 3 whose next move keeps its direction (only normalises it to
        unit length) has travelled nothing: the bound is on the direction the ranker reads."""
        rails = Guardrails(0, 0.3, Clock())
        long_item = np.array([3.0, 0.0], np.float32)
        assert rails.check(5, None, long_item) == common_pb2.GUARDRAIL_NONE
        assert rails.check(5, long_item, np.array([1.0, 0.0], np.float32)) == common_pb2.GUARDRAIL_NONE

    def test_removing_a_user_forgets_their_guardrail_state(self, catalog, tmp_path: Path) -> None:
        """A deleted user leaves nothing behind, not even their counts in the guardrails."""
        core = paramserver_core(catalog, tmp_path, guardrails=Guardrails(5, 0, Clock()))
        user = int(catalog.user_ids[0])
        try:
            _drift(core, user, 1)
            assert core.guardrails.remembers(user)
            core.remove(paramserver_pb2.RemoveRequest(table=USER), {"keys": np.array([user], np.int64)}, HeapOutputs())
            assert not core.guardrails.remembers(user)
        finally:
            core.close()


class TestEventTime:
    def test_a_backfill_is_judged_by_the_events_own_clock(self, catalog, tmp_path: Path) -> None:
        """Ten likes dated a minute apart pass a cap of 5 a minute; the same ten live ones are held back past 5."""
        clock = Clock()
        core = paramserver_core(catalog, tmp_path, guardrails=Guardrails(5, 0, clock))
        dated, live = int(catalog.user_ids[0]), int(catalog.user_ids[1])
        try:
            for n in range(10):
                at = int(clock.now) - 3600 + 60 * n
                reply = core.drift(paramserver_pb2.DriftRequest(user_id=dated, item_id=n + 1, event=LIKE, event_time=at),
                                   {}, HeapOutputs())
                assert reply.applied and reply.held_back == common_pb2.GUARDRAIL_NONE
            held = [_drift(core, live, n + 1).held_back for n in range(10)]
            assert held.count(common_pb2.GUARDRAIL_RATE) == 5
        finally:
            core.close()

    def test_an_event_time_past_now_is_judged_as_now(self) -> None:
        """A dated move is never judged later than the clock: a date in the future counts in the current window."""
        clock = Clock()
        rails = Guardrails(1, 0, clock)
        assert rails.check(7, None, None, event_time=clock.now + 10_000) == common_pb2.GUARDRAIL_NONE
        assert rails.check(7, None, None) == common_pb2.GUARDRAIL_RATE

    def test_a_future_event_time_is_refused_naming_the_field(self, catalog, tmp_path: Path) -> None:
        """Drift dated an hour ahead of now: INVALID_ARGUMENT naming event_time, and the vector stays."""
        core = paramserver_core(catalog, tmp_path)
        user = int(catalog.user_ids[0])
        try:
            before = _vector(core, user)
            with pytest.raises(InvalidArgument, match="event_time"):
                core.drift(paramserver_pb2.DriftRequest(user_id=user, item_id=1, event=LIKE,
                                                        event_time=int(time.time()) + 3600), {}, HeapOutputs())
            np.testing.assert_array_equal(_vector(core, user), before)
        finally:
            core.close()
