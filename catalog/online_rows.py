"""Online counts in the store: each gateway replica publishes, per model version and scope (its totals, or one
canary's trial), what it counted and its recent latencies, one row per (scope, replica, version) that only that
replica writes; the guardrails and `feedserve models list` sum the rows of every replica."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["ONLINE_DDL", "CountRow", "StoredOnlineCounts"]

ONLINE_DDL = """
CREATE TABLE IF NOT EXISTS online_counts (scope TEXT NOT NULL, gateway TEXT NOT NULL, version TEXT NOT NULL,
    counts TEXT NOT NULL, latencies {blob} NOT NULL, at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, gateway, version));
"""

# version, counts by name, recent latencies (float32 milliseconds, little-endian)
CountRow = tuple[str, dict[str, int], bytes]


class StoredOnlineCounts:
    """The store's `online_counts` table, as part of `Store`: the same connection and transactions."""

    _transaction: Callable[..., AbstractContextManager[Any]]
    _sql: Callable[[str], str]

    def publish_counts(self, scope: str, gateway: str, rows: Sequence[CountRow], at: float) -> None:
        """Replace what `gateway` published for `scope` with `rows` (its counts so far: not increments, so a
        publish that is lost or repeated changes nothing)."""
        if not rows:
            return
        with self._transaction(serial=False) as cur:  # rows no other replica writes: no need to queue behind the catalog
            cur.executemany(self._sql("INSERT INTO online_counts (scope, gateway, version, counts, latencies, at)"
                                      " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, gateway, version) DO UPDATE SET"
                                      " counts = excluded.counts, latencies = excluded.latencies, at = excluded.at"),
                            [(scope, gateway, version, json.dumps(counts, sort_keys=True), latencies, at)
                             for version, counts, latencies in rows])

    def counts_of(self, scope: str) -> list[tuple[str, CountRow]]:
        """Every replica's rows for `scope`: (gateway, (version, counts, latencies))."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT gateway, version, counts, latencies FROM online_counts WHERE scope = ?"
                                  " ORDER BY gateway, version"), (scope,))
            return [(str(gateway), (str(version), json.loads(counts), bytes(latencies)))
                    for gateway, version, counts, latencies in cur.fetchall()]

    def forget_counts(self, keep: Sequence[str]) -> int:
        """Drop the rows of every scope but `keep` (trials that ended); returns how many went."""
        with self._transaction(serial=False) as cur:
            marks = ", ".join("?" for _ in keep) or "''"
            cur.execute(self._sql(f"DELETE FROM online_counts WHERE scope NOT IN ({marks})"), tuple(keep))
            return int(cur.rowcount or 0)
