"""Work run beside the caller in a child process (learning/beside.py), and the sequential baseline run that way."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
import scipy.sparse as sp

from errors import Internal
from learning.beside import Beside
from learning.sequential import SequentialParams, sequences, tuned_top


def _counting(tell, upto: int) -> int:
    for n in range(upto):
        tell("counted", n)
    return os.getpid()


def _raising(tell, message: str) -> None:
    raise ValueError(message)


def _dying(tell, code: int) -> None:
    tell("about to die")
    os._exit(code)


def test_the_notes_arrive_in_order_then_the_result_from_another_process() -> None:
    """Every note the child tells reaches `on_note` in order before the result, and the work ran in another process."""
    notes: list[tuple] = []
    with Beside("counting", _counting, 5) as beside:
        pid = beside.result(notes.append)
    assert notes == [("counted", n) for n in range(5)]
    assert pid != os.getpid()


def _waiting(tell, go) -> int:
    tell("waiting")
    go.wait()
    return 7


def test_done_says_whether_the_call_has_ended_without_waiting_and_keeps_the_notes_it_read() -> None:
    """`done` is False while the child is held, True once it has returned; the notes read on the way are still
    handed on by `result`, once each and in order."""
    go = multiprocessing.get_context("spawn").Event()
    notes: list[tuple] = []
    with Beside("waiting", _waiting, go) as beside:
        assert not beside.done()
        go.set()
        assert beside.result(notes.append) == 7
        assert beside.done()
    assert notes == [("waiting",)]


def test_a_failure_beside_is_raised_naming_the_work_with_its_traceback() -> None:
    """An exception in the child is raised in the caller as Internal, naming the work and carrying the traceback."""
    with Beside("the failing work", _raising, "no such column") as beside, pytest.raises(Internal) as raised:
        beside.result()
    assert "the failing work failed in its process" in str(raised.value)
    assert "ValueError: no such column" in str(raised.value)


def test_a_child_that_dies_without_a_result_is_an_error_not_a_hang() -> None:
    """A child that exits without answering (killed, out of memory) ends the wait with Internal naming its exit code;
    the notes it told before are still handed on."""
    notes: list[tuple] = []
    with Beside("the dying work", _dying, 3) as beside, pytest.raises(Internal, match="exit code 3"):
        beside.result(notes.append)
    assert notes == [("about to die",)]


def _repeating() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], sp.csr_matrix, sp.csr_matrix]:
    """Twenty users walking the cycle 0 -> 1 -> ... -> 9 -> 0 from different starts; the validation slice holds each
    one's last step."""
    items = 10
    everything = {u: np.array([(u + n) % items for n in range(12)], np.int64) for u in range(20)}
    early = {u: rows[:-1] for u, rows in everything.items()}
    users = np.arange(20)
    fit = sp.csr_matrix((np.ones(20 * 11, np.float32), (np.repeat(users, 11), np.concatenate(list(early.values())))),
                        shape=(20, items))
    check = sp.csr_matrix((np.ones(20, np.float32), (users, [rows[-1] for rows in everything.values()])),
                          shape=(20, items))
    return early, everything, fit, check


def test_the_sequential_baseline_beside_ranks_exactly_as_it_does_in_process() -> None:
    """tuned_top in a child process gives the same top k and tuned epochs as the same call in this process (both on
    one thread, same seed), and it learned the cycle: each user's next item comes first."""
    import torch

    early, everything, fit, check = _repeating()
    rows, k = np.arange(20), 3
    seen = sp.csr_matrix((20, 10), dtype=np.float32)  # nothing left out: the next item is one already seen
    params = SequentialParams(dim=16, epochs=40, batch=8, learning_rate=1e-2, dropout=0.0)
    with Beside("the sequential baseline", tuned_top, early, everything, fit, check, rows, seen, k, params,
                0) as beside:
        beside_top, beside_epochs = beside.result()
    threads = torch.get_num_threads()
    try:
        top, epochs = tuned_top(lambda *note: None, early, everything, fit, check, rows, seen, k, params, 0)
    finally:
        torch.set_num_threads(threads)
    assert (beside_top == top).all() and beside_epochs == epochs
    nexts = np.array([(everything[u][-1] + 1) % 10 for u in range(20)])
    assert (top[:, 0] == nexts).mean() >= 0.9


def _priority(tell) -> int:
    return os.nice(0)


def test_the_child_yields_the_cores_to_the_caller() -> None:
    """The child runs at the lowest priority (nice 19), so the caller's own multi-threaded work is never displaced."""
    with Beside("priority", _priority) as beside:
        assert beside.result() == 19


def test_an_empty_history_gives_no_sequences() -> None:
    """`sequences` of no events is an empty mapping (an empty store is refused by the caller, not by an IndexError)."""
    empty = np.zeros(0, np.int64)
    assert sequences(empty, empty, empty, np.zeros(0, bool)) == {}
