"""The gateway's caches: recent feeds per user and exact generation answers; both dropped when the user interacts
or is forgotten. (The rest of a ranking travels in its page cursor: gateway/cursors.py.)

Each keeps its entries serialised: their bytes are what they cost (a parsed message costs about 8x its wire size
in Python objects: 5.9 MiB of 20-item feeds took 47 MiB), so each is bounded by bytes, in total and per tenant,
as well as by count. A tenant past its share evicts its own entries, nobody else's.
"""

from __future__ import annotations

import time

from feedserve.v1 import gateway_pb2, generator_pb2
from mesh.lru import LruCache

__all__ = ["FeedCache", "AnswerCache", "answer_key"]

_ENTRY_OVERHEAD = 200  # bytes a kept entry costs beyond its payload: the key, the tuple, the LRU's bookkeeping


class FeedCache:
    """LRU of recent feeds by (tenant, user, k). Fresh entries answer directly; stale ones (up to `keep_s`) are
    kept as a degradation step when the budget is too short to rank. A user's feeds, under every tenant,
    drop together when the user interacts."""

    def __init__(self, ttl_s: float = 30.0, keep_s: float = 600.0, capacity: int = 100_000,
                 max_bytes: int = 256 << 20, max_tenant_bytes: int = 128 << 20) -> None:
        self.ttl_s, self.keep_s = ttl_s, keep_s
        self._entries: LruCache[tuple[str, int, int], tuple[float, bytes]] = LruCache(capacity, max_bytes,
                                                                                        max_tenant_bytes)
        self.hits = self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._entries.bytes

    def put(self, user: int, k: int, feed: gateway_pb2.FeedResponse, tenant: str = "") -> None:
        """Keep the feed as it is now (later changes to `feed` are not seen)."""
        wire = feed.SerializeToString()
        self._entries.put((tenant, user, k), (time.monotonic(), wire), group=user, owner=tenant,
                          size=len(wire) + _ENTRY_OVERHEAD)

    def get(self, user: int, k: int, stale_ok: bool = False, tenant: str = "") -> gateway_pb2.FeedResponse | None:
        entry = self._entries.get((tenant, user, k))
        if entry is None or time.monotonic() - entry[0] > (self.keep_s if stale_ok else self.ttl_s):
            if not stale_ok:
                self.misses += 1
            return None
        if not stale_ok:
            self.hits += 1
        return gateway_pb2.FeedResponse.FromString(entry[1])

    def invalidate(self, user: int) -> int:
        """Forget every cached feed of `user`, under every tenant; returns how many."""
        return self._entries.drop_group(user)


def answer_key(request: generator_pb2.GenerateRequest) -> bytes:
    """The whole request but who is billed and traced: tenant, prompt, user, model, limits and constraints."""
    keyed = generator_pb2.GenerateRequest()
    keyed.CopyFrom(request)
    keyed.context.feature_tag = keyed.context.trace_id = ""
    return keyed.SerializeToString(deterministic=True)


class AnswerCache:
    """Finished generations by their exact request (which holds the tenant), for `ttl_s` seconds, at most
    `capacity` (LRU). It sits at the edge so that a repeat costs one hop, not two; a user's answers go when
    that user interacts, since a post about "their top interest" follows their vector."""

    def __init__(self, ttl_s: float = 300.0, capacity: int = 10_000, max_bytes: int = 64 << 20,
                 max_tenant_bytes: int = 32 << 20) -> None:
        self.ttl_s = ttl_s
        self._entries: LruCache[bytes, tuple[float, bytes]] = LruCache(capacity, max_bytes, max_tenant_bytes)
        self.hits = self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._entries.bytes

    def get(self, key: bytes) -> generator_pb2.GenerateChunk | None:
        """The final chunk to answer with (whole text, the original models), or None."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.ttl_s:
            self.misses += 1
            return None
        self.hits += 1
        return generator_pb2.GenerateChunk.FromString(entry[1])

    def put(self, key: bytes, user: int, text: str, usage: generator_pb2.Usage, tenant: str = "") -> None:
        answer = generator_pb2.GenerateChunk(text=text, final=True, usage=generator_pb2.Usage(models=usage.models))
        wire = answer.SerializeToString()
        self._entries.put(key, (time.monotonic(), wire), group=user, owner=tenant,
                          size=len(key) + len(wire) + _ENTRY_OVERHEAD)

    def invalidate(self, user: int) -> int:
        """Forget every answer written for `user`; returns how many."""
        return self._entries.drop_group(user)

    @property
    def users_indexed(self) -> int:
        """Users with at least one answer cached (no empty index is kept)."""
        return self._entries.group_count()

