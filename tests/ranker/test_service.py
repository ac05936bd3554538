"""Ranker over a real gRPC server: retrieval from several sources, model scores, diversity, bad input."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from feedserve.v1 import ranker_pb2, ranker_pb2_grpc
from mesh.tensors import from_tensor, to_tensor
from ranker.retrieval import Retriever
from ranker.service import diversified_top_k
from tests.stack import start_ranker


async def _with_ranker(world, manifest, body) -> None:
    server, _ = await start_ranker(world, manifest)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await body(ranker_pb2_grpc.RankerStub(channel))
    finally:
        await server.stop(0)


class TestRank:
    def test_rank_returns_k_items_scored_by_the_model(self, world, manifest, run) -> None:
        """A known user gets k items from retrieval, scores in (0, 1), in descending order, with hops."""

        async def body(stub) -> None:
            user = to_tensor(np.asarray(world.user_tastes[0]))
            reply = await stub.Rank(ranker_pb2.RankRequest(user_id=1, user_vector=user, k=20))
            assert len(reply.items) == 20 and not reply.cold_start
            scores = [item.score for item in reply.items]
            assert all(0 < s < 1 for s in scores)
            assert reply.candidates_considered > 1000
            assert [h.stage for h in reply.hops] == ["retrieval", "features", "queued", "model"]
            assert reply.model_name == manifest.name and reply.model_version == manifest.version
            assert all(item.sources and item.title for item in reply.items)

        run(_with_ranker(world, manifest, body))

    def test_served_scores_equal_the_naive_model_on_the_same_features(self, world, manifest, run) -> None:
        """The decomposed serving path scores given candidates exactly as the naive graph does on the
        assembled 4,736-dim features (relative error <= 1e-5)."""
        import onnxruntime as ort

        from ranker.features import ItemTable, assemble, context_features, cross_features, item_features, user_features

        ids = np.array([3, 50, 400, 4999], np.int64)
        user = np.asarray(world.user_tastes[2])
        context = context_features(np.array([9]), np.array([2]), np.array([1]), np.array([0]), "feed")[0]

        async def body(stub) -> None:
            reply = await stub.Rank(ranker_pb2.RankRequest(
                user_id=3, user_vector=to_tensor(user), k=4, candidates=to_tensor(ids),
                context_features=to_tensor(context), return_all_scores=True))
            got = from_tensor(reply.scores, "scores")
            items = ItemTable.from_world(world)
            attributes = np.asarray(world.user_attributes)[2][None, :]
            centroids = np.asarray(world.category_centroids)
            features = assemble(
                user_features(user[None, :], attributes, centroids), item_features(items, ids - 1), context[None, :],
                cross_features(user[None, :], attributes, items, ids - 1, np.zeros(4, np.uint8),
                               np.zeros((4, 2), np.float32), world.now, centroids))
            naive = ort.InferenceSession(str(manifest.path("naive")), providers=["CPUExecutionProvider"])
            weights = np.array([manifest.extra["head_weights"][h] for h in ("click", "like", "dwell", "share")], np.float32)
            expected = naive.run(["scores"], {"features": features, "head_weights": weights})[0]
            assert np.linalg.norm(got - expected) / np.linalg.norm(expected) <= 1e-5

        run(_with_ranker(world, manifest, body))

    def test_missing_user_vector_gives_cold_start_from_popular_and_fresh(self, world, manifest, run) -> None:
        async def body(stub) -> None:
            reply = await stub.Rank(ranker_pb2.RankRequest(k=10))
            assert reply.cold_start and len(reply.items) == 10
            assert {s for item in reply.items for s in item.sources} <= {"popular", "fresh"}

        run(_with_ranker(world, manifest, body))

    def test_every_source_contributes_for_a_known_user(self, world, manifest, run) -> None:
        """Interest, cluster, fresh and popular candidates all reach the scored set, each tagged with its source."""

        async def body(stub) -> None:
            reply = await stub.Rank(ranker_pb2.RankRequest(
                user_id=1, user_vector=to_tensor(np.asarray(world.user_tastes[0])), k=500))
            assert {s for item in reply.items for s in item.sources} == {"interest", "cluster", "fresh", "popular"}
            assert 2000 <= reply.candidates_considered <= 2400

        run(_with_ranker(world, manifest, body))

    @pytest.mark.parametrize(
        "request_fields, field",
        [
            ({"k": 0}, "k"),
            ({"k": 501}, "k"),
            ({"k": 5, "candidate_count": 10**6}, "candidate_count"),
            ({"k": 5, "user_vector": to_tensor(np.zeros(3, np.float32))}, "user_vector.shape"),
            ({"k": 5, "user_vector": to_tensor(np.full(64, np.nan, np.float32))}, "user_vector"),
            ({"k": 5, "candidates": to_tensor(np.array([0], np.int64))}, "candidates"),
            ({"k": 5, "context_features": to_tensor(np.full(512, np.inf, np.float32))}, "context_features"),
            ({"k": 5, "context_features": to_tensor(np.zeros(4736, np.float32))}, "context_features.shape"),
        ],
    )
    def test_bad_rank_request_names_the_field(self, world, manifest, run, request_fields, field) -> None:
        async def body(stub) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Rank(ranker_pb2.RankRequest(**request_fields))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details().startswith(field)

        run(_with_ranker(world, manifest, body))


class TestRetrieval:
    def test_interest_source_finds_most_of_the_exact_top_items(self, world) -> None:
        """The ANN source recalls at least 70% of the 50 items with the highest inner product."""
        from ranker.features import ItemTable

        items = ItemTable.from_world(world)
        retriever = Retriever(items)
        user = np.asarray(world.user_tastes[7])
        found = retriever.retrieve(user, 1000)
        best = set((np.argsort(-(items.embeddings @ user))[:50] + 1).tolist())
        interest = set(found.ids[(found.sources & 1) == 1].tolist())
        assert len(best & interest) >= 35
        assert len(np.unique(found.ids)) == len(found.ids)

    def test_new_items_are_retrievable_without_a_rebuild(self, world) -> None:
        """An item added after start is found by the interest source, the fresh pool and its cluster."""
        from ranker.features import ItemTable

        items = ItemTable.from_world(world)
        retriever = Retriever(items)
        user = np.asarray(world.user_tastes[3])
        items.append(user[None, :], np.array([5]), np.array([world.now]), np.array([1e6], np.float32),
                     np.zeros((1, 4), np.int32))
        row = len(items) - 1
        retriever.add(np.array([row]))
        found = retriever.retrieve(user, 600)
        index = int(np.flatnonzero(found.ids == row + 1)[0])
        assert set(found.source_names(index)) >= {"interest", "fresh", "popular"}

    def test_diversity_caps_each_category(self) -> None:
        """With k=8 the cap is 2 per category; only when categories run out does the best overflow fill in."""
        scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
        categories = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
        chosen = diversified_top_k(scores, categories, 8)
        # 2 of category 0, 2 of 1, 2 of 2, the lone 3 (score 0.05 beats a third item of 0), then overflow
        assert chosen.tolist() == [0, 1, 4, 5, 7, 8, 9, 2]
