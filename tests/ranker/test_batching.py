"""Dynamic batching: concurrent rankings share model runs within their window, with their own answers."""

from __future__ import annotations

import threading

import numpy as np

from feedserve.v1 import ranker_pb2
from mesh.methods import HeapOutputs
from ranker.service import Ranker
from tests.stack import ranker_for


def _rank(ranker: Ranker, user: int, catalog, window_us: int) -> np.ndarray:
    out = HeapOutputs()
    ranker.rank(ranker_pb2.RankRequest(user_id=user, k=10, return_all_scores=True, max_batch_delay_us=window_us),
                {"user_vector": catalog.vector(user)}, out)
    return out.arrays["scores"].copy()


def test_concurrent_requests_are_batched_and_each_gets_its_own_scores(catalog, manifest) -> None:
    """Six threads rank at once with a 200 ms window: the model runs in batches larger than one, and every
    request's scores equal the scores it gets alone."""
    ranker = ranker_for(catalog, manifest, max_batch_delay_us=200_000)
    alone = {user: _rank(ranker, user, catalog, 0) for user in range(1, 7)}
    assert set(ranker.batcher.batch_sizes) == {1}
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(6)

    def worker(user: int) -> None:
        start.wait()
        results[user] = _rank(ranker, user, catalog, 200_000)

    threads = [threading.Thread(target=worker, args=(user,)) for user in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert max(ranker.batcher.batch_sizes) > 1
    for user, scores in results.items():
        np.testing.assert_allclose(scores, alone[user], rtol=1e-5, atol=1e-6)


def test_a_lone_request_with_a_zero_window_runs_at_once(catalog, manifest) -> None:
    """One after another, with no window, every run is a batch of one: nobody waits for company."""
    ranker = ranker_for(catalog, manifest, max_batch_delay_us=200_000)
    for user in (1, 2, 3):
        _rank(ranker, user, catalog, 0)
    assert ranker.batcher.batch_sizes == {1: 3}


def test_requests_arriving_while_the_engine_is_busy_share_the_next_run(catalog, manifest) -> None:
    """Runs never overlap: with the engine held by a slow run, zero-window requests queue and go together."""
    ranker = ranker_for(catalog, manifest)
    inner, gate, entered = ranker.engine.run, threading.Event(), threading.Event()

    def slow_first(inputs, outputs):  # the real engine, held once so that a queue forms behind it
        if not entered.is_set():
            entered.set()
            gate.wait(30)
        inner(inputs, outputs)

    ranker.resident.primary.engine = type("Held", (), {"run": staticmethod(slow_first), "manifest": ranker.engine.manifest})()
    first = threading.Thread(target=_rank, args=(ranker, 1, catalog, 0))
    first.start()
    entered.wait(30)
    rest = [threading.Thread(target=_rank, args=(ranker, u, catalog, 0)) for u in (2, 3, 4)]
    for thread in rest:
        thread.start()
    with ranker.batcher._cond:  # every enqueue notifies it: wait for the queue, not for time
        assert ranker.batcher._cond.wait_for(lambda: len(ranker.batcher._queue) == 3, timeout=30)
    gate.set()
    for thread in [first, *rest]:
        thread.join(60)
    assert ranker.batcher.batch_sizes == {1: 1, 3: 1}


def test_a_batch_charges_each_request_its_share_of_the_runs_cpu_and_the_shares_add_up(monkeypatch) -> None:
    """Three requests share one run whose CPU (the leader's thread and the engine's own threads) is 9 s on fake
    clocks: each is charged in proportion to its candidates, and the shares sum to the run's CPU exactly."""
    import ranker.batching as batching
    from ranker.batching import Batcher, Job

    thread_clock, engine_clock = [1_000], [50]
    monkeypatch.setattr(batching, "cpu_ns", lambda: thread_clock[0])

    def run(inputs, outputs) -> None:
        thread_clock[0] += 2_000_000_001  # the leader's own thread
        engine_clock[0] += 6_999_999_999  # ONNX Runtime's pool threads
        outputs["scores"][...] = 0.5
        outputs["heads"][...] = 0.5

    batcher = Batcher(run, {}, engine_cpu_ns=lambda: engine_clock[0])
    jobs = [Job(np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32), np.arange(1, n + 1), np.zeros((n, 3), np.float32),
                np.empty(n, np.float32), np.empty((n, 4), np.float32), 0.0) for n in (100, 300, 500)]
    batcher._run(jobs)
    assert sum(job.cpu_ns for job in jobs) == 9_000_000_000
    assert [job.cpu_ns for job in jobs] == [1_000_000_000, 3_000_000_000, 5_000_000_000]
    assert all(job.done.is_set() and (job.scores == 0.5).all() for job in jobs)


def test_split_cpu_adds_up_for_any_sizes() -> None:
    """The remainder of an uneven split goes to the largest request; empty requests split evenly; none: nothing."""
    from mesh.timing import split_cpu

    for total, sizes in ((10, [1, 1, 1]), (7, [0, 0]), (1_000_003, [5, 2400, 17]), (0, [3, 4])):
        shares = split_cpu(total, sizes)
        assert sum(shares) == total and len(shares) == len(sizes) and min(shares) >= 0
    assert split_cpu(10, [1, 1, 1]) == [4, 3, 3]
    assert split_cpu(5, []) == []
