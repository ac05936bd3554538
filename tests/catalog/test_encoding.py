"""Content vectors: computed from title, text and categories by the real sentence encoder, once per distinct content."""

from __future__ import annotations

import numpy as np

from catalog import Item, Store
from catalog.encoding import ContentEncoder
from catalog.store import content_text
from engines.sentence import DIM, SentenceEncoder


class TestContentEncoder:
    def test_new_items_get_vectors_and_come_through_the_feed_again(self, store: Store, encoder: SentenceEncoder) -> None:
        """An upserted item has no vector; after the encoder runs, the change feed delivers it with its unit vector."""
        store.upsert_items([Item("a", "Hiking in the Alps", "Trails and huts", ["travel"]), Item("b", "Sourdough bread")])
        after = store.sequence()
        assert all(i.vector is None for i in store.changes(0)[0])
        worker = ContentEncoder(store, encoder.encode_batch)
        assert worker.drain() == 2
        items = {i.external_id: i for i in store.changes(after)[0]}
        assert set(items) == {"a", "b"}
        vector = items["a"].vector
        assert vector.shape == (DIM,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
        expected = encoder.encode(content_text("Hiking in the Alps", "Trails and huts", ["travel"]))
        np.testing.assert_allclose(vector, expected, atol=1e-4)

    def test_identical_content_is_encoded_once(self, store: Store, encoder: SentenceEncoder) -> None:
        """Two items with the same content share one encoding; a later third one gets the vector at upsert."""
        calls: list[int] = []

        def encode(texts: list[str]) -> np.ndarray:
            calls.append(len(texts))
            return encoder.encode_batch(texts)

        store.upsert_items([Item("a", "Same title"), Item("b", "Same title")])
        assert ContentEncoder(store, encode).drain() == 1 and calls == [1]
        store.upsert_items([Item("c", "Same title")])
        assert store.pending_content() == []
        latest = {i.external_id: i for i in store.changes(0)[0]}
        np.testing.assert_array_equal(latest["c"].vector, latest["a"].vector)

    def test_changed_text_is_encoded_again(self, store: Store, encoder: SentenceEncoder) -> None:
        """Re-upserting an item with new text clears its vector until the new content is encoded."""
        store.upsert_items([Item("a", "Cats")])
        worker = ContentEncoder(store, encoder.encode_batch)
        worker.drain()
        first = store.changes(0)[0][0].vector
        store.upsert_items([Item("a", "Rockets and orbital mechanics")])
        assert store.changes(0)[0][0].vector is None
        worker.drain()
        assert not np.allclose(store.changes(0)[0][0].vector, first)

    def test_batched_encoding_matches_one_at_a_time(self, encoder: SentenceEncoder) -> None:
        """Padding in a batch does not change any text's vector."""
        texts = ["a", "a much longer sentence about mountains and rivers and the sea", "mid length text here"]
        batched = encoder.encode_batch(texts, batch=2)
        for text, vector in zip(texts, batched):
            np.testing.assert_allclose(vector, encoder.encode(text), atol=1e-4)
