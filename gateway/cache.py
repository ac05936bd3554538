"""The per-user feed cache: a short TTL, invalidated when that user interacts."""

from __future__ import annotations

import time
from collections import OrderedDict

from feedserve.v1 import gateway_pb2

__all__ = ["FeedCache"]


class FeedCache:
    """LRU of recent feeds by (user, k). Fresh entries answer directly; stale ones (up to `keep_s`) are
    kept as a degradation step when the budget is too short to rank."""

    def __init__(self, ttl_s: float = 30.0, keep_s: float = 600.0, capacity: int = 100_000) -> None:
        self.ttl_s, self.keep_s, self.capacity = ttl_s, keep_s, capacity
        self._entries: OrderedDict[tuple[int, int], tuple[float, gateway_pb2.FeedResponse]] = OrderedDict()
        self._ks: dict[int, set[int]] = {}  # user -> the k values cached for them: invalidation without a scan
        self.hits = self.misses = 0

    def put(self, user: int, k: int, feed: gateway_pb2.FeedResponse) -> None:
        self._entries[(user, k)] = (time.monotonic(), feed)
        self._entries.move_to_end((user, k))
        self._ks.setdefault(user, set()).add(k)
        while len(self._entries) > self.capacity:
            (old_user, old_k), _ = self._entries.popitem(last=False)
            self._forget(old_user, old_k)

    def _forget(self, user: int, k: int) -> None:
        ks = self._ks.get(user)
        if ks is not None:
            ks.discard(k)
            if not ks:
                del self._ks[user]

    def get(self, user: int, k: int, stale_ok: bool = False) -> gateway_pb2.FeedResponse | None:
        entry = self._entries.get((user, k))
        age = time.monotonic() - entry[0] if entry else None
        if entry is None or age > (self.keep_s if stale_ok else self.ttl_s):
            if not stale_ok:
                self.misses += 1
            return None
        if not stale_ok:
            self.hits += 1
        return entry[1]

    def invalidate(self, user: int) -> int:
        """Forget every cached feed of `user`; returns how many."""
        ks = self._ks.pop(user, set())
        for k in ks:
            del self._entries[(user, k)]
        return len(ks)
