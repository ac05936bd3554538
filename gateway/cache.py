"""The gateway's caches: recent feeds per user, exact generation answers, and the rest of a ranking behind a page
cursor; all dropped when the user interacts or is forgotten."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict

from feedserve.v1 import gateway_pb2, generator_pb2
from mesh.errors import InvalidArgument

__all__ = ["FeedCache", "AnswerCache", "PageCursors", "answer_key"]


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


def answer_key(request: generator_pb2.GenerateRequest) -> bytes:
    """The whole request but who is billed and traced: tenant, prompt, user, model, limits and constraints."""
    keyed = generator_pb2.GenerateRequest()
    keyed.CopyFrom(request)
    keyed.context.feature_tag = keyed.context.trace_id = ""
    return keyed.SerializeToString(deterministic=True)


class AnswerCache:
    """Finished generations by their exact request, for `ttl_s` seconds, at most `capacity` (LRU). It sits at
    the edge so that a repeat costs one hop, not two; a user's answers go when that user interacts, since a
    post about "their top interest" follows their vector."""

    def __init__(self, ttl_s: float = 300.0, capacity: int = 10_000) -> None:
        self.ttl_s, self.capacity = ttl_s, capacity
        self._entries: OrderedDict[bytes, tuple[float, int, generator_pb2.GenerateChunk]] = OrderedDict()
        self._by_user: dict[int, set[bytes]] = {}
        self.hits = self.misses = 0

    def get(self, key: bytes) -> generator_pb2.GenerateChunk | None:
        """The final chunk to answer with (whole text, the original models), or None."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.ttl_s:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[2]

    def put(self, key: bytes, user: int, text: str, usage: generator_pb2.Usage) -> None:
        answer = generator_pb2.GenerateChunk(text=text, final=True, usage=generator_pb2.Usage(models=usage.models))
        self._entries[key] = (time.monotonic(), user, answer)
        self._entries.move_to_end(key)
        self._by_user.setdefault(user, set()).add(key)
        while len(self._entries) > self.capacity:
            old, (_, old_user, _) = self._entries.popitem(last=False)
            self._by_user.get(old_user, set()).discard(old)

    def invalidate(self, user: int) -> int:
        """Forget every answer written for `user`; returns how many."""
        keys = self._by_user.pop(user, set())
        for key in keys:
            self._entries.pop(key, None)
        return len(keys)


class PageCursors:
    """The ranked items a feed has not shown yet, behind an unguessable cursor, for `ttl_s` (LRU-bounded). The next
    page continues that same ranking, so no item repeats. A cursor names one user and is ours only: another
    gateway's, a forged or an expired one is INVALID_ARGUMENT."""

    def __init__(self, ttl_s: float = 600.0, capacity: int = 100_000) -> None:
        self.ttl_s, self.capacity = ttl_s, capacity
        self._entries: OrderedDict[str, tuple[float, int, list[gateway_pb2.FeedItem]]] = OrderedDict()
        self._by_user: dict[int, set[str]] = {}

    def put(self, user: int, rest: list[gateway_pb2.FeedItem]) -> str:
        token = secrets.token_urlsafe(18)
        self._entries[token] = (time.monotonic(), user, rest)
        self._by_user.setdefault(user, set()).add(token)
        while len(self._entries) > self.capacity:
            old, (_, old_user, _) = self._entries.popitem(last=False)
            self._by_user.get(old_user, set()).discard(old)
        return token

    def take(self, token: str, user: int) -> list[gateway_pb2.FeedItem]:
        """The items left behind `token`, for `user`; the cursor is spent."""
        entry = self._entries.pop(token, None)
        if entry is None:
            raise InvalidArgument("cursor", "unknown: not issued by this gateway, already used, or forgotten")
        stamp, owner, rest = entry
        self._by_user.get(owner, set()).discard(token)
        if owner != user:
            raise InvalidArgument("cursor", "was issued for another user")
        if time.monotonic() - stamp > self.ttl_s:
            raise InvalidArgument("cursor", f"expired: cursors last {self.ttl_s:.0f} s")
        return rest

    def invalidate(self, user: int) -> int:
        tokens = self._by_user.pop(user, set())
        for token in tokens:
            self._entries.pop(token, None)
        return len(tokens)
