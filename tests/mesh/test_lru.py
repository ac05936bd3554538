"""The one LRU cache behind the feed cache, the answer cache, the page cursors and the embedding cache."""

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
