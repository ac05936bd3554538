"""native.CuckooTable: exact lookups, growth, precisions, admission, expiry, drift, and whole rows under concurrency."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from native import INSERTED, PENDING, UPDATED, CuckooTable


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def data():
    rng = np.random.default_rng(4)
    keys = rng.choice(2**62, 20_000, replace=False).astype(np.int64) + 1
    return keys, _unit(rng.standard_normal((20_000, 64)))


class TestCuckooTable:
    def test_grows_far_past_its_expected_size_and_finds_every_key(self, data) -> None:
        """Sized for 1,000 keys, loaded with 20,000: every key comes back exact, misses are reported per key."""
        keys, rows = data
        table = CuckooTable(64, "fp32", expected=1000)
        status = table.upsert(keys, rows)
        assert (status == INSERTED).all() and table.size == len(keys)
        values, found = table.lookup(np.concatenate([keys, [7, 8]]))
        assert found[:-2].all() and not found[-2:].any()
        np.testing.assert_array_equal(values[:-2], rows)
        assert not values[-2:].any()
        assert (table.upsert(keys[:5], rows[5:10]) == UPDATED).all()

    @pytest.mark.parametrize("precision, bound", [("fp16", 1e-3), ("int8", 1e-2)])
    def test_reduced_precision_keeps_cosine_error_small(self, data, precision: str, bound: float) -> None:
        keys, rows = data
        table = CuckooTable(64, precision, expected=len(keys))
        table.upsert(keys, rows)
        values, _ = table.lookup(keys)
        cosine = (values * rows).sum(1) / np.linalg.norm(values, axis=1)
        assert (1 - cosine).mean() <= bound

    def test_bytes_per_row_follow_the_precision(self, data) -> None:
        keys, rows = data
        sizes = {}
        for precision in ("fp32", "fp16", "int8"):
            table = CuckooTable(64, precision, expected=len(keys))
            table.upsert(keys, rows)
            sizes[precision] = table.bytes / len(keys)
        assert sizes["fp32"] < 300 and sizes["fp16"] < 170 and sizes["int8"] < 100

    def test_a_new_key_gets_a_row_only_after_n_sightings(self) -> None:
        table = CuckooTable(4, admit_after=3)
        row = np.ones((1, 4), np.float32)
        assert table.upsert([5], row)[0] == PENDING and table.upsert([5], row)[0] == PENDING
        assert not table.lookup([5])[1][0]
        assert table.upsert([5], row)[0] == INSERTED and table.lookup([5])[1][0]
        assert table.upsert([9], row, admit=False)[0] == INSERTED  # restoring a snapshot skips admission

    def test_rows_past_their_ttl_are_hidden_then_swept(self) -> None:
        table = CuckooTable(4)
        table.upsert([1, 2], np.ones((2, 4), np.float32), now_s=1000)
        table.upsert([2], np.ones((1, 4), np.float32), now_s=1090)
        assert table.lookup([1, 2], now_s=1100, ttl_s=60)[1].tolist() == [False, True]
        assert table.expire(1100, 60) == 1 and table.size == 1
        table.upsert([3], np.ones((1, 4), np.float32), now_s=1100)  # reuses the freed row
        assert table.lookup([2, 3], now_s=1100, ttl_s=60)[1].all()

    def test_removed_keys_miss_and_their_rows_are_reused(self) -> None:
        """remove() drops keys (stash included), reports which were there, and frees their rows."""
        table = CuckooTable(4, expected=16)
        keys = np.arange(1, 201, dtype=np.int64)
        table.upsert(keys, np.ones((200, 4), np.float32))
        assert table.remove(np.array([3, 5, 999])).tolist() == [True, True, False]
        assert table.size == 198 and not table.lookup([3, 5])[1].any() and table.lookup([4])[1][0]
        assert table.remove(keys).sum() == 198 and table.size == 0
        table.upsert([7], np.full((1, 4), 2.0, np.float32))
        assert table.lookup([7])[0][0].tolist() == [2.0] * 4

    def test_drift_moves_toward_the_target_and_renormalises(self, data) -> None:
        keys, rows = data
        table = CuckooTable(64)
        table.upsert(keys[:1], rows[:1])
        moved, status = table.drift(keys[:2], rows[2:4], np.array([0.1, 0.1], np.float32))
        expected = rows[0] + 0.1 * (rows[2] - rows[0])
        np.testing.assert_allclose(moved[0], expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)
        assert status.tolist() == [1, 2]  # moved; created from the target
        np.testing.assert_array_equal(table.lookup(keys[1:2])[0][0], rows[3])

    def test_a_planned_drift_answers_the_move_and_changes_nothing(self, data) -> None:
        """commit=False returns the committed move's rows and status (moved, created, unchanged) while the table,
        its size and its admission counts stay as they were: the guardrails judge exactly the move stored next."""
        keys, rows = data
        table = CuckooTable(64, admit_after=2)
        table.upsert(keys[:1], rows[:1], admit=False)
        rates = np.array([0.1, 0.1, -0.1], np.float32)
        planned, status = table.drift(keys[:3], rows[3:6], rates, commit=False)
        assert status.tolist() == [1, 2, 0]  # moves; would be created; a negative event creates nobody
        assert table.size == 1
        np.testing.assert_array_equal(table.lookup(keys[:1])[0][0], rows[0])
        moved, committed = table.drift(keys[:1], rows[3:4], rates[:1])
        np.testing.assert_array_equal(planned[0], moved[0])
        np.testing.assert_array_equal(planned[1], rows[4])
        assert committed.tolist() == [1]
        assert table.upsert(keys[1:2], planned[1:2]).tolist() == [PENDING]  # the plan did not count a sighting

    def test_zero_key_is_rejected_and_nothing_changes(self) -> None:
        table = CuckooTable(4)
        with pytest.raises(ValueError, match="0 is reserved"):
            table.upsert([3, 0], np.ones((2, 4), np.float32))
        assert table.size == 0

    def test_wrong_buffer_sizes_name_the_argument(self) -> None:
        table = CuckooTable(4)
        with pytest.raises(ValueError, match="values holds"):
            table.upsert([1, 2], np.ones((2, 3), np.float32))
        with pytest.raises(ValueError, match="dim"):
            CuckooTable(0)
        with pytest.raises(ValueError, match="precision"):
            CuckooTable(4, "fp8")

    def test_a_concurrent_reader_never_sees_a_torn_row(self) -> None:
        """A writer flips 2,000 rows between all-1 and all-2 (GIL released); readers only ever see whole rows."""
        keys = np.arange(1, 2001, dtype=np.int64)
        table = CuckooTable(64, expected=2000)
        table.upsert(keys, np.ones((2000, 64), np.float32))
        stop, torn, seen = threading.Event(), [], set()

        def write() -> None:
            for flip in range(300):
                table.upsert(keys, np.full((2000, 64), 1 + flip % 2, np.float32))
            stop.set()

        def read() -> None:
            while not stop.is_set():
                values, _ = table.lookup(keys)
                mixed = values.min(axis=1) != values.max(axis=1)
                if mixed.any():
                    torn.append(int(mixed.sum()))
                if not stop.is_set():  # finished while the writer was still writing
                    seen.update(np.unique(values[:, 0]).tolist())

        threads = [threading.Thread(target=write), threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert torn == []
        assert seen == {1.0, 2.0}, f"no read overlapped the writes (rows seen: {seen})"

    def test_initialising_twice_is_refused_and_keeps_the_rows(self) -> None:
        """__init__ again would free the buckets under a lookup running without the GIL: refused."""
        table = CuckooTable(4)
        table.upsert([7], np.ones((1, 4), np.float32))
        with pytest.raises(TypeError, match="already initialised"):
            table.__init__(8)
        assert table.dim == 4 and table.lookup([7])[1].tolist() == [True]

    def test_a_table_never_initialised_refuses_every_method(self) -> None:
        """CuckooTable.__new__ without __init__ has no buckets: each method raises instead of crashing
        (in a child process, so that a crash fails this test rather than the run)."""
        code = ("import numpy as np; from native import CuckooTable\n"
                "t = CuckooTable.__new__(CuckooTable)\n"
                "calls = [lambda: t.lookup_into(np.ones(1, np.uint64), np.empty(4, np.float32), np.empty(1, np.uint8)),\n"
                "         lambda: t.upsert_into(np.ones(1, np.uint64), np.ones(4, np.float32), np.empty(1, np.uint8)),\n"
                "         lambda: t.drift_into(np.ones(1, np.uint64), np.ones(4, np.float32), np.ones(1, np.float32),\n"
                "                              np.empty(4, np.float32), np.empty(1, np.uint8)),\n"
                "         lambda: t.expire(1, 1), lambda: t.remove_into(np.ones(1, np.uint64), np.empty(1, np.uint8)),\n"
                "         lambda: t.export_into(np.empty(1, np.uint64), np.empty(4, np.float32), np.empty(1, np.uint32)),\n"
                "         lambda: t.size, lambda: t.bytes]\n"
                "for call in calls:\n"
                "    try:\n"
                "        call()\n"
                "    except ValueError as exc:\n"
                "        assert 'not initialised' in str(exc)\n"
                "    else:\n"
                "        raise SystemExit('a method ran on an uninitialised table')\n"
                "print('refused')\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "refused" in result.stdout, result.stdout + result.stderr
