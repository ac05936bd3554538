"""Dynamic batching: concurrent rankings share model runs within their window, with their own answers."""

from __future__ import annotations

import threading

import numpy as np

from feedserve.v1 import ranker_pb2
from mesh.dispatch import HeapOutputs
from ranker.service import Ranker


def _rank(ranker: Ranker, user: int, world, window_us: int) -> np.ndarray:
    out = HeapOutputs()
    ranker.rank(ranker_pb2.RankRequest(user_id=user, k=10, return_all_scores=True, max_batch_delay_us=window_us),
                {"user_vector": np.asarray(world.user_tastes[user - 1])}, out)
    return out.arrays["scores"].copy()


def test_concurrent_requests_are_batched_and_each_gets_its_own_scores(world, manifest) -> None:
    """Six threads rank at once with a 200 ms window: the model runs in batches larger than one, and every
    request's scores equal the scores it gets alone."""
    ranker = Ranker(world, manifest, max_batch_delay_us=200_000)
    alone = {user: _rank(ranker, user, world, 0) for user in range(1, 7)}
    assert set(ranker.batcher.batch_sizes) == {1}
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(6)

    def worker(user: int) -> None:
        start.wait()
        results[user] = _rank(ranker, user, world, 200_000)

    threads = [threading.Thread(target=worker, args=(user,)) for user in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert max(ranker.batcher.batch_sizes) > 1
    for user, scores in results.items():
        np.testing.assert_allclose(scores, alone[user], rtol=1e-5, atol=1e-6)


def test_a_zero_window_never_waits_for_others(world, manifest) -> None:
    ranker = Ranker(world, manifest, max_batch_delay_us=200_000)
    for user in (1, 2, 3):
        _rank(ranker, user, world, 0)
    assert ranker.batcher.batch_sizes == {1: 3}
