"""The generator's caches: semantic by meaning without false hits, over an embedding cache."""

from __future__ import annotations

import pytest

from catalog import USER
from engines.sentence import DIM, SentenceEncoder
from feedserve.v1 import common_pb2, generator_pb2
from generator.caches import Answer, EmbeddingCache, SemanticCache, contrasts, request_scope
from generator.evalset import CONTRASTS, PARAPHRASES

ANSWER = Answer(((0, "cached text"),), ("small",), 5, 7)


def _request(prompt: str = "Write a post about music.", **fields) -> generator_pb2.GenerateRequest:
    return generator_pb2.GenerateRequest(prompt=prompt, **{"max_tokens": 40, **fields})


class TestSemanticCache:
    @pytest.fixture
    def cache(self, encoder: SentenceEncoder) -> SemanticCache:
        return SemanticCache(EmbeddingCache(encoder.encode), threshold=0.88)

    def test_the_encoder_gives_unit_vectors(self, encoder: SentenceEncoder) -> None:
        """all-MiniLM-L6-v2 through ONNX Runtime: 384 floats of norm 1, similar sentences close."""
        a, b = encoder.encode("How do I reset my password?"), encoder.encode("How can I reset my password?")
        assert a.shape == (DIM,) and abs(float(a @ a) - 1) < 1e-4
        assert float(a @ b) > 0.9

    def test_a_paraphrase_hits(self, cache: SemanticCache) -> None:
        """Another wording of a cached request is answered from the cache."""
        scope = request_scope(_request())
        cache.put(scope, "How do I reset my password?", ANSWER)
        found = cache.get(scope, "How can I reset my password?")
        assert found is not None and found[0] == ANSWER and found[1] >= 0.88

    def test_a_contrast_pair_does_not_hit(self, cache: SemanticCache, encoder: SentenceEncoder) -> None:
        """A reversed question scores above the threshold (0.99 for these two), yet is not a hit: the
        contrast guard sees the relation's objects swapped."""
        first, reverse = "Flights from Paris to London", "Flights from London to Paris"
        assert float(encoder.encode(first) @ encoder.encode(reverse)) > 0.88
        scope = request_scope(_request())
        cache.put(scope, first, ANSWER)
        assert cache.get(scope, reverse) is None
        assert cache.guarded == 1

    def test_no_contrast_pair_of_the_labelled_set_hits(self, cache: SemanticCache) -> None:
        """Negations, reversals, numbers, antonyms and swapped subjects: none is answered from another's entry."""
        hits = []
        for n, (first, second) in enumerate(CONTRASTS):
            scope = f"{request_scope(_request())}#{n}"  # each pair alone: only its own first can answer
            cache.put(scope, first, ANSWER)
            if cache.get(scope, second) is not None:
                hits.append((first, second))
        assert hits == []

    def test_entries_are_scoped_per_tenant_and_request(self, cache: SemanticCache) -> None:
        """The same prompt under another tenant, or with other constraints, does not hit."""
        cache.put(request_scope(_request()), "How do I reset my password?", ANSWER)
        for other in (_request(context=common_pb2.RequestContext(tenant="acme")), _request(banned_words=["reset"])):
            assert cache.get(request_scope(other), "How do I reset my password?") is None

    def test_scopes_are_bounded_and_a_deleted_users_go_with_the_delete(self, encoder: SentenceEncoder,
                                                                       tmp_path) -> None:
        """With room for 3 scopes, a fourth evicts the least recently used. Deleting a user in the real store
        and applying the change feed (as the generator's follower does) drops that user's scopes: the same
        prompt no longer hits for them, and another user's answer stays."""
        from catalog import User, open_store
        from generator.__main__ import _forget_deleted_users

        cache = SemanticCache(EmbeddingCache(encoder.encode), threshold=0.88, max_scopes=3)
        prompt = "How do I reset my password?"
        for user in (1, 2, 3, 4):
            cache.put(request_scope(_request(user_id=user)), prompt, ANSWER, user)
        assert len(cache) == 3 and cache.get(request_scope(_request(user_id=1)), prompt) is None
        store = open_store(tmp_path / "catalog.db")
        store.upsert_users([User("gone"), User("kept")])
        (gone, kept) = store.resolve(USER, ["gone", "kept"]).tolist()
        for user in (gone, kept):
            cache.put(request_scope(_request(user_id=user)), prompt, ANSWER, user)
        follower = _forget_deleted_users(store, cache)
        store.delete_user("gone")
        follower.poll()
        assert cache.get(request_scope(_request(user_id=gone)), prompt) is None
        assert cache.get(request_scope(_request(user_id=kept)), prompt) is not None

    def test_the_embedding_cache_encodes_each_text_once(self, encoder: SentenceEncoder) -> None:
        """A repeated text is a hit, not another encoder run."""
        embeddings = EmbeddingCache(encoder.encode)
        embeddings.get("hello there")
        embeddings.get("hello there")
        assert (embeddings.hits, embeddings.misses) == (1, 1)


class TestContrastGuard:
    @pytest.mark.parametrize("pair", PARAPHRASES[:10])
    def test_plain_paraphrases_are_not_contrasts(self, pair: tuple[str, str]) -> None:
        """Rewording alone (with the same numbers, polarity and relations) is not flagged."""
        assert not contrasts(*pair)

    @pytest.mark.parametrize("pair", [("is it hot", "is it not hot"), ("buy 3", "buy 4"),
                                      ("from a to b", "from b to a"), ("cheap flights", "expensive flights")])
    def test_each_kind_of_contrast_is_flagged(self, pair: tuple[str, str]) -> None:
        """Negation, number, reversal and antonym each make two texts differ."""
        assert contrasts(*pair)
