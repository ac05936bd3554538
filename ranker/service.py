"""The Ranker gRPC servicer: retrieve, assemble features, score with the engine, diversify."""

from __future__ import annotations

import math

import grpc
import numpy as np

from engines import Engine
from feedserve.v1 import ranker_pb2, ranker_pb2_grpc
from mesh.errors import InvalidArgument
from mesh.rpclog import annotate
from mesh.tensors import check_finite, from_tensor, to_tensor
from mesh.timing import HopRecorder
from ranker.retrieval import Candidates, Retriever
from ranker.training import item_extras
from world import World
from world.synthetic import CATEGORIES

__all__ = ["RankerService", "DEFAULT_CANDIDATES", "MAX_K", "MAX_CANDIDATES"]

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


class RankerService(ranker_pb2_grpc.RankerServicer):
    """Ranks a world's items for one user with a versioned model."""

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

    def _validate(self, request: ranker_pb2.RankRequest) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not 1 <= request.k <= MAX_K:
            raise InvalidArgument("k", f"expected 1..{MAX_K}, got {request.k}")
        if request.candidate_count > MAX_CANDIDATES:
            raise InvalidArgument("candidate_count", f"at most {MAX_CANDIDATES}, got {request.candidate_count}")
        user = None
        if request.HasField("user_vector"):
            user = from_tensor(request.user_vector, "user_vector", np.float32)
            if user.shape != (self.dim,):
                raise InvalidArgument("user_vector.shape", f"expected [{self.dim}], got {list(user.shape)}")
            check_finite(user, "user_vector")
        candidates = None
        if request.HasField("candidates"):
            candidates = from_tensor(request.candidates, "candidates", np.int64, ndim=1)
            if len(candidates) > MAX_CANDIDATES:
                raise InvalidArgument("candidates", f"at most {MAX_CANDIDATES}, got {len(candidates)}")
            if len(candidates) and (candidates.min() < 1 or candidates.max() > len(self.embeddings)):
                raise InvalidArgument("candidates", f"item ids are expected in 1..{len(self.embeddings)}")
        if request.HasField("context_features"):
            context = from_tensor(request.context_features, "context_features", np.float32, ndim=1)
            check_finite(context, "context_features")
        return user, candidates

    def rank(self, request: ranker_pb2.RankRequest) -> ranker_pb2.RankResponse:
        """Synchronous core, shared by every transport."""
        hops = HopRecorder(SERVICE)
        user, given = self._validate(request)
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
        if request.return_all_scores:
            response.candidate_ids.CopyFrom(to_tensor(found.ids, "candidate_ids"))
            response.scores.CopyFrom(to_tensor(scores, "scores"))
        response.hops.extend(hops.hops)
        return response

    async def Rank(self, request: ranker_pb2.RankRequest, context: grpc.aio.ServicerContext) -> ranker_pb2.RankResponse:
        return self.rank(request)
