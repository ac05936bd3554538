"""The gateway's exact answer cache: the whole request is the key, entries expire, and a user's go when they act."""

from __future__ import annotations

from feedserve.v1 import common_pb2, generator_pb2
from gateway.cache import AnswerCache, answer_key

USAGE = generator_pb2.Usage(models=["small"], tokens_in=5, tokens_out=7)


def _request(prompt: str = "Write a post about music.", **fields) -> generator_pb2.GenerateRequest:
    return generator_pb2.GenerateRequest(prompt=prompt, **{"max_tokens": 40, **fields})


class TestAnswerCache:
    def test_the_same_request_hits_and_any_other_field_misses(self) -> None:
        """Tenant, user, limit, constraints and prompt are all in the key; the billing tag is not."""
        cache = AnswerCache()
        cache.put(answer_key(_request()), 0, "cached text", USAGE)
        hit = cache.get(answer_key(_request(context=common_pb2.RequestContext(feature_tag="other-feature"))))
        assert hit is not None and hit.final and hit.text == "cached text" and list(hit.usage.models) == ["small"]
        assert hit.usage.tokens_out == 0  # a replay spends no tokens
        for other in (_request(max_tokens=41), _request(user_id=7), _request(banned_words=["the"]),
                      _request(context=common_pb2.RequestContext(tenant="acme")), _request("Write a post about food.")):
            assert cache.get(answer_key(other)) is None

    def test_an_expired_answer_is_not_returned(self) -> None:
        """With its TTL run out, an entry is gone."""
        cache = AnswerCache(ttl_s=-1.0)  # every entry is born expired
        cache.put(b"k", 0, "text", USAGE)
        assert cache.get(b"k") is None

    def test_capacity_evicts_the_least_recently_used(self) -> None:
        """Past capacity the oldest unused entry goes first."""
        cache = AnswerCache(capacity=2)
        for key in (b"a", b"b"):
            cache.put(key, 0, "text", USAGE)
        cache.get(b"a")
        cache.put(b"c", 0, "text", USAGE)
        assert cache.get(b"b") is None and cache.get(b"a") is not None

    def test_invalidating_a_user_drops_only_their_answers(self) -> None:
        """After user 7 interacts, their posts are written afresh; user 8's stay."""
        cache = AnswerCache()
        cache.put(b"seven", 7, "text", USAGE)
        cache.put(b"eight", 8, "text", USAGE)
        assert cache.invalidate(7) == 1
        assert cache.get(b"seven") is None and cache.get(b"eight") is not None
