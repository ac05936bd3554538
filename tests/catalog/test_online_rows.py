"""Online counts in the store (SQLite and PostgreSQL): each replica's rows replace its own, every replica's are read
back, and ended trials are forgotten."""

from __future__ import annotations

import numpy as np

from catalog import Store


def _latencies(*values: float) -> bytes:
    return np.asarray(values, "<f4").tobytes()


def test_a_publish_replaces_the_replicas_own_rows_and_leaves_the_others(store: Store) -> None:
    """Counts are what a replica counted so far, not increments: publishing twice keeps the second; another
    replica's rows stay beside them; another scope is apart."""
    store.publish_counts("total", "a", [("ranker-mlp/1", {"feeds": 3}, _latencies(1.0))], 1.0)
    store.publish_counts("total", "a", [("ranker-mlp/1", {"feeds": 5}, _latencies(1.0, 2.0))], 2.0)
    store.publish_counts("total", "b", [("ranker-mlp/1", {"feeds": 7}, _latencies())], 2.0)
    store.publish_counts("trial x", "b", [("ranker-mlp/2", {"feeds": 1}, _latencies(9.0))], 2.0)
    rows = store.counts_of("total")
    assert [(gateway, version, counts["feeds"]) for gateway, (version, counts, _) in rows] == [
        ("a", "ranker-mlp/1", 5), ("b", "ranker-mlp/1", 7)]
    assert np.frombuffer(rows[0][1][2], "<f4").tolist() == [1.0, 2.0]
    assert [version for _, (version, _, _) in store.counts_of("trial x")] == ["ranker-mlp/2"]


def test_ended_trials_are_forgotten_and_the_totals_kept(store: Store) -> None:
    for scope in ("total", "trial old", "trial new"):
        store.publish_counts(scope, "a", [("ranker-mlp/1", {"feeds": 1}, _latencies())], 1.0)
    assert store.forget_counts(["total", "trial new"]) == 1
    assert store.counts_of("trial old") == [] and len(store.counts_of("trial new")) == 1
    assert len(store.counts_of("total")) == 1
