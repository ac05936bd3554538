"""The one LRU cache behind the feed cache, the answer cache and the embedding cache."""

from __future__ import annotations

import pytest

from feedserve.v1 import gateway_pb2, generator_pb2
from gateway.cache import AnswerCache, FeedCache
from mesh.lru import LruCache


def test_a_hit_refreshes_recency_so_the_least_recently_used_goes_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3


def test_a_group_drops_together_and_eviction_leaves_no_empty_group() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1, group="u1")
    cache.put("b", 2, group="u1")
    cache.put("c", 3, group="u2")  # evicts a
    assert cache.group_count() == 2
    assert cache.drop_group("u1") == 1 and len(cache) == 1
    cache.put("d", 4, group="u3")
    cache.put("e", 5, group="u3")  # evicts c: u2 is gone with it
    assert cache.group_count() == 1


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LruCache(0)


def test_the_feed_cache_keeps_a_feed_that_is_read_over_one_that_is_not() -> None:
    """FeedCache is LRU by reads too (before, get never refreshed recency, despite the docstring)."""
    cache = FeedCache(capacity=2)
    cache.put(1, 20, gateway_pb2.FeedResponse(request_id="one"))
    cache.put(2, 20, gateway_pb2.FeedResponse(request_id="two"))
    assert cache.get(1, 20).request_id == "one"
    cache.put(3, 20, gateway_pb2.FeedResponse(request_id="three"))
    assert cache.get(2, 20) is None and cache.get(1, 20).request_id == "one"


def test_the_answer_cache_leaves_no_empty_index_for_evicted_users() -> None:
    """Before, AnswerCache kept an empty per-user set for every user whose answers were evicted."""
    cache = AnswerCache(capacity=1)
    usage = generator_pb2.Usage(models=["small"])
    for user in range(100):
        cache.put(f"request {user}".encode(), user, "text", usage)
    assert cache.users_indexed == 1


def test_bytes_are_bounded_in_total_and_per_owner_and_an_owner_evicts_only_its_own() -> None:
    """Owner a fills its 30-byte share; its next entry evicts a's oldest, never b's. Past the 50-byte total the
    least recently used entry of anybody goes. An entry larger than a bound is not kept; every drop (a group, an
    eviction) gives its bytes back."""
    cache: LruCache[str, int] = LruCache(100, max_bytes=50, max_owner_bytes=30)
    cache.put("b1", 0, size=10, owner="b")
    for n in range(5):
        cache.put(f"a{n}", n, size=10, owner="a", group="user-a")
    assert cache.owner_bytes("a") == 30 and "b1" in cache and "a1" not in cache and "a4" in cache
    cache.put("c1", 0, size=10, owner="c")
    cache.put("c2", 0, size=10, owner="c")  # 60 bytes: the least recently used of all (b1) goes
    assert cache.bytes == 50 and "b1" not in cache and cache.owner_bytes("b") == 0
    assert not cache.put("huge", 0, size=31, owner="d") and "huge" not in cache
    assert cache.drop_group("user-a") == 3 and cache.bytes == 20 and cache.owner_bytes("a") == 0
