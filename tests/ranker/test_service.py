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
            assert {h.stage for h in reply.hops} == {"retrieval", "features", "model"}
            assert reply.model_name == manifest.name and reply.model_version == manifest.version
            assert all(item.sources and item.title for item in reply.items)

        run(_with_ranker(world, manifest, body))

    def test_scores_match_the_onnx_model_computed_by_hand(self, world, manifest, run) -> None:
        """Scoring given candidates equals sigmoid([u*i, extras] @ w + b) recomputed from the ONNX weights."""
        import onnx
        from onnx import numpy_helper

        from ranker.training import item_extras

        weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(manifest.path)).graph.initializer}
        ids = np.array([3, 50, 400], np.int64)
        user = np.asarray(world.user_tastes[2])

        async def body(stub) -> None:
            reply = await stub.Rank(
                ranker_pb2.RankRequest(user_vector=to_tensor(user), k=3, candidates=to_tensor(ids), return_all_scores=True)
            )
            got = dict(zip(from_tensor(reply.candidate_ids, "c").tolist(), from_tensor(reply.scores, "s").tolist()))
            features = np.concatenate([user * world.item_embeddings[ids - 1], item_extras(world)[ids - 1]], axis=1)
            expected = 1 / (1 + np.exp(-(features @ weights["w"][:, 0] + weights["b"][0])))
            assert [got[i] for i in ids.tolist()] == pytest.approx(expected.tolist(), rel=1e-5)

        run(_with_ranker(world, manifest, body))

    def test_missing_user_vector_gives_cold_start_from_popular_and_fresh(self, world, manifest, run) -> None:
        async def body(stub) -> None:
            reply = await stub.Rank(ranker_pb2.RankRequest(k=10))
            assert reply.cold_start and len(reply.items) == 10
            assert {s for item in reply.items for s in item.sources} <= {"popular", "fresh"}

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
            ({"k": 5, "context_features": to_tensor(np.array([np.inf], np.float32))}, "context_features"),
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
    def test_interest_source_holds_the_exact_top_items(self, world) -> None:
        """The interest candidates include the items with the highest inner product with the user."""
        user = np.asarray(world.user_tastes[7])
        found = Retriever(world).retrieve(user, 1000)
        best = np.argsort(-(np.asarray(world.item_embeddings) @ user))[:50] + 1
        interest = set(found.ids[(found.sources & 1) == 1].tolist())
        assert set(best.tolist()) <= interest
        assert len(np.unique(found.ids)) == len(found.ids)

    def test_diversity_caps_each_category(self) -> None:
        """With k=8 the cap is 2 per category; only when categories run out does the best overflow fill in."""
        scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
        categories = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
        chosen = diversified_top_k(scores, categories, 8)
        # 2 of category 0, 2 of 1, 2 of 2, the lone 3 (score 0.05 beats a third item of 0), then overflow
        assert chosen.tolist() == [0, 1, 4, 5, 7, 8, 9, 2]
