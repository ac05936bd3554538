"""The Ranker core (retrieve, assemble features, score with the engine, diversify) and its gRPC servicer."""

from __future__ import annotations

import math

import grpc
import numpy as np

from engines import Engine
from feedserve.v1 import ranker_pb2, ranker_pb2_grpc
from mesh.dispatch import Handler, Outputs, Tensors, serve_unary
from mesh.errors import InvalidArgument
from mesh.rpclog import annotate
from mesh.tensors import check_finite, expect
from mesh.timing import HopRecorder
from ranker.retrieval import Candidates, Retriever
from ranker.training import item_extras
from world import World
from world.synthetic import CATEGORIES

__all__ = ["Ranker", "RankerServicer", "DEFAULT_CANDIDATES", "MAX_K", "MAX_CANDIDATES"]

SERVICE = "ranker"
DEFAULT_CANDIDATES = 2_400
MAX_CANDIDATES = 20_000
MAX_K = 500


def diversified_top_k(scores: np.ndarray, categories: np.ndarray, k: int) -> np.ndarray:
    """Indices of the best `k` scores, at most ceil(k/4) (and at least 2) per category when possible."""
    cap = max(2, math.ceil(k / 4))
    order = np.argsort(-scores, kind="stable")
    chosen, overflow, counts = [], [], {}
    for index in order.tolist():
        category = int(categories[index])
        if counts.get(category, 0) < cap:
            counts[category] = counts.get(category, 0) + 1
            chosen.append(index)
            if len(chosen) == k:
                break
        else:
            overflow.append(index)
    chosen.extend(overflow[: k - len(chosen)])  # too few categories: fill with the best remaining
    return np.asarray(chosen, dtype=np.int64)


class Ranker:
    """Ranks a world's items for one user with a versioned model. Read-only after start: thread-safe."""

    def __init__(self, world: World, engine: Engine) -> None:
        self.world = world
        self.engine = engine
        self.retriever = Retriever(world)
        self.embeddings = self.retriever.embeddings
        self.extras = item_extras(world)
        self.categories = np.asarray(world.item_category)
        self.titles = world.titles
        self.dim = world.spec.dim
        tastes = np.asarray(world.user_tastes).mean(axis=0)
        self.average_user = (tastes / np.linalg.norm(tastes)).astype(np.float32)

    def handlers(self) -> dict[str, Handler]:
        return {"Rank": self.rank}

    def _validate(self, request: ranker_pb2.RankRequest, tensors: Tensors) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not 1 <= request.k <= MAX_K:
            raise InvalidArgument("k", f"expected 1..{MAX_K}, got {request.k}")
        if request.candidate_count > MAX_CANDIDATES:
            raise InvalidArgument("candidate_count", f"at most {MAX_CANDIDATES}, got {request.candidate_count}")
        user = expect(tensors, "user_vector", np.float32)
        if user is not None:
            if user.shape != (self.dim,):
                raise InvalidArgument("user_vector.shape", f"expected [{self.dim}], got {list(user.shape)}")
            check_finite(user, "user_vector")
        candidates = expect(tensors, "candidates", np.int64, ndim=1)
        if candidates is not None:
            if len(candidates) > MAX_CANDIDATES:
                raise InvalidArgument("candidates", f"at most {MAX_CANDIDATES}, got {len(candidates)}")
            if len(candidates) and (candidates.min() < 1 or candidates.max() > len(self.embeddings)):
                raise InvalidArgument("candidates", f"item ids are expected in 1..{len(self.embeddings)}")
        context = expect(tensors, "context_features", np.float32, ndim=1)
        if context is not None:
            check_finite(context, "context_features")
        return user, candidates

    def rank(self, request: ranker_pb2.RankRequest, tensors: Tensors, outputs: Outputs) -> ranker_pb2.RankResponse:
        """The user vector is read where it arrived (a ring slot, or the gRPC message): no copy."""
        hops = HopRecorder(SERVICE)
        user, given = self._validate(request, tensors)
        with hops.stage("retrieval"):
            if given is not None:
                found = Candidates(ids=given, sources=np.zeros(len(given), np.uint8))
            else:
                found = self.retriever.retrieve(user, request.candidate_count or DEFAULT_CANDIDATES)
        with hops.stage("features"):
            rows = found.ids - 1
            items = self.embeddings[rows]
            extras = self.extras[rows]
            query = (user if user is not None else self.average_user).reshape(1, -1)
            if request.return_all_scores:  # scores go straight into the response (the ring slot)
                scores = outputs.empty("scores", np.float32, (len(rows),))
                outputs.empty("candidate_ids", np.int64, (len(rows),))[...] = found.ids
            else:
                scores = np.empty(len(rows), dtype=np.float32)
        with hops.stage("model"):
            if len(rows):
                self.engine.run({"user": query, "items": items, "extras": extras}, {"scores": scores})
        manifest = self.engine.manifest
        annotate(model=manifest.name, model_version=manifest.version, candidates=len(rows))
        response = ranker_pb2.RankResponse(
            candidates_considered=len(rows),
            model_name=manifest.name,
            model_version=manifest.version,
            cold_start=user is None,
        )
        for index in diversified_top_k(scores, self.categories[rows], min(request.k, len(rows))).tolist():
            row = int(rows[index])
            response.items.append(
                ranker_pb2.RankedItem(
                    item_id=row + 1,
                    score=float(scores[index]),
                    title=self.titles[row],
                    category=CATEGORIES[self.categories[row]],
                    sources=found.source_names(index),
                )
            )
        response.hops.extend(hops.hops)
        return response


class RankerServicer(ranker_pb2_grpc.RankerServicer):
    """The gRPC face of a Ranker core."""

    def __init__(self, core: Ranker) -> None:
        self.core = core

    async def Rank(self, request: ranker_pb2.RankRequest, context: grpc.aio.ServicerContext) -> ranker_pb2.RankResponse:
        return serve_unary(self.core.rank, request)
