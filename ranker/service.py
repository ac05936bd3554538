"""The Ranker core (retrieve, assemble features, score with the decomposed model, diversify) and its gRPC servicer."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import replace

import grpc
import numpy as np

from engines import ModelManifest, load_engine
from feedserve.v1 import ranker_pb2, ranker_pb2_grpc
from mesh.dispatch import Handler, Outputs, Tensors, serve_unary
from mesh.errors import InvalidArgument
from mesh.rpclog import annotate
from mesh.tensors import check_finite, expect
from mesh.timing import HopRecorder, cpu_ns, now_ns
from ranker.features import (
    CONTEXT_DIM, HEADS, HIDDEN_ITEM, ItemTable, context_features, cross_features, item_features, user_features,
)
from ranker.batching import Batcher, Job
from ranker.retrieval import Candidates, Retriever
from world import World
from world.synthetic import CATEGORIES

__all__ = ["Ranker", "RankerServicer", "DEFAULT_CANDIDATES", "MAX_K", "MAX_CANDIDATES", "diversified_top_k"]

SERVICE = "ranker"
DEFAULT_CANDIDATES = 2_400
MAX_CANDIDATES = 20_000
MAX_K = 500
_TOWER_CHUNK = 8_192


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
    """Ranks a world's items for one user with a versioned multi-objective model.

    The item term of the first layer is precomputed for every item at start (the item tower) and for
    each new item as it is added; a request computes its user and context terms once, and only the
    small cross term and the upper layers per candidate.
    """

    def __init__(self, world: World, manifest: ModelManifest, precision: str = "fp32", threads: int = 2,
                 head_weights: dict[str, float] | None = None, device: str = "cpu",
                 max_batch_delay_us: int = 2_000) -> None:
        self.items = ItemTable.from_world(world)
        self.titles = list(world.titles)
        self.now = world.now  # the synthetic world's present: freshness is measured from it
        self.centroids = np.asarray(world.category_centroids)
        self.user_attributes = np.asarray(world.user_attributes)
        tastes = np.asarray(world.user_tastes).mean(axis=0)
        self.average_user = (tastes / np.linalg.norm(tastes)).astype(np.float32)
        self.manifest = manifest
        self.engine = load_engine(manifest, "decomposed", precision, device, threads)
        self.tower = load_engine(manifest, "item_tower", "fp32", device, threads)
        weights = {**manifest.extra.get("head_weights", {}), **(head_weights or {})}
        self.head_weights = np.array([weights.get(h, 0.0) for h in HEADS], dtype=np.float32)
        self.retriever = Retriever(self.items)
        self.item_table = self._item_terms(np.arange(len(self.items)))
        self.max_batch_delay_s = max_batch_delay_us / 1e6
        self.batcher = Batcher(self._run_model, {"item_table": self.item_table, "head_weights": self.head_weights})
        self._lock = threading.Lock()  # retrieval and add_items: FAISS must not search while it grows

    def handlers(self) -> dict[str, Handler]:
        return {"Rank": self.rank}

    def _run_model(self, inputs, outputs) -> None:
        self.engine.run(inputs, outputs)

    def _item_terms(self, rows: np.ndarray) -> np.ndarray:
        table = np.empty((len(rows), HIDDEN_ITEM), dtype=np.float32)
        for start in range(0, len(rows), _TOWER_CHUNK):
            part = rows[start:start + _TOWER_CHUNK]
            self.tower.run({"items": item_features(self.items, part)}, {"item_part": table[start:start + len(part)]})
        return table

    def add_items(self, embeddings: np.ndarray, category: np.ndarray, published: np.ndarray,
                  popularity: np.ndarray, attributes: np.ndarray, titles: list[str]) -> np.ndarray:
        """Add items; they are retrievable and rankable at once (no rebuild). Returns their ids."""
        with self._lock:
            start = len(self.items)
            self.items.append(embeddings, category, published, popularity, attributes)
            rows = np.arange(start, len(self.items))
            self.item_table = np.concatenate([self.item_table, self._item_terms(rows)])
            self.batcher.fixed = {"item_table": self.item_table, "head_weights": self.head_weights}
            self.titles.extend(titles)
            self.retriever.add(rows)
        return rows + 1

    def _validate(self, request: ranker_pb2.RankRequest, tensors: Tensors) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        if not 1 <= request.k <= MAX_K:
            raise InvalidArgument("k", f"expected 1..{MAX_K}, got {request.k}")
        if request.candidate_count > MAX_CANDIDATES:
            raise InvalidArgument("candidate_count", f"at most {MAX_CANDIDATES}, got {request.candidate_count}")
        user = expect(tensors, "user_vector", np.float32)
        if user is not None:
            if user.shape != (self.items.embeddings.shape[1],):
                raise InvalidArgument("user_vector.shape", f"expected [{self.items.embeddings.shape[1]}], got {list(user.shape)}")
            check_finite(user, "user_vector")
        candidates = expect(tensors, "candidates", np.int64, ndim=1)
        if candidates is not None:
            if len(candidates) > MAX_CANDIDATES:
                raise InvalidArgument("candidates", f"at most {MAX_CANDIDATES}, got {len(candidates)}")
            if len(candidates) and (candidates.min() < 1 or candidates.max() > len(self.items)):
                raise InvalidArgument("candidates", f"item ids are expected in 1..{len(self.items)}")
        context = expect(tensors, "context_features", np.float32, ndim=1)
        if context is not None:
            if context.shape != (CONTEXT_DIM,):
                raise InvalidArgument("context_features.shape", f"expected [{CONTEXT_DIM}], got {list(context.shape)}")
            check_finite(context, "context_features")
        return user, candidates, context

    def _context(self, request: ranker_pb2.RankRequest) -> np.ndarray:
        now = time.gmtime()
        return context_features(np.array([now.tm_hour]), np.array([now.tm_wday]), np.array([0]), np.array([0]),
                                request.context.feature_tag)

    def rank(self, request: ranker_pb2.RankRequest, tensors: Tensors, outputs: Outputs) -> ranker_pb2.RankResponse:
        """Tensors are used where they arrived (a ring slot or the gRPC message): ids and context are bound
        to the engine as they are, and all scores are written straight into the response."""
        hops = HopRecorder(SERVICE)
        user, given, context = self._validate(request, tensors)
        with hops.stage("retrieval"):
            with self._lock:
                items = replace(self.items)  # this request's view: add_items swaps the arrays, never edits them
                if given is not None:
                    found = Candidates(ids=given, sources=np.zeros(len(given), np.uint8),
                                       scores=np.zeros((len(given), 2), np.float32))
                else:
                    found = self.retriever.retrieve(user if user is not None else None,
                                                    request.candidate_count or DEFAULT_CANDIDATES)
        with hops.stage("features"):
            rows = found.ids - 1
            known = 1 <= request.user_id <= len(self.user_attributes)
            attributes = self.user_attributes[request.user_id - 1][None, :] if known else None
            users = user[None, :] if user is not None else None
            user_part = user_features(users, attributes, self.centroids)
            context_part = context.reshape(1, CONTEXT_DIM) if context is not None else self._context(request)
            cross = cross_features(users, attributes, items, rows, found.sources, found.scores, self.now, self.centroids)
            n = len(rows)
            scores = outputs.empty("scores", np.float32, (n,)) if request.return_all_scores else np.empty(n, np.float32)
            heads = np.empty((n, len(HEADS)), dtype=np.float32)
        if n:  # two handoffs: waiting for the engine (or for company), then the model run itself
            window = min(request.max_batch_delay_us / 1e6, self.max_batch_delay_s)
            job = Job(user_part, context_part, found.ids, cross, scores, heads, window)
            queued, cpu = now_ns(), cpu_ns()
            self.batcher.submit(job)
            hops.add("queued", queued, job.started_ns)
            hops.add("model", job.started_ns, now_ns(), cpu_ns() - cpu)
        categories = items.category[rows]
        chosen = diversified_top_k(scores, categories, min(request.k, n))
        titles = [self.titles[r] for r in rows[chosen].tolist()]
        if request.return_all_scores:
            outputs.empty("candidate_ids", np.int64, (n,))[...] = found.ids
        annotate(model=self.manifest.name, model_version=self.manifest.version, candidates=n)
        response = ranker_pb2.RankResponse(
            candidates_considered=n, model_name=self.manifest.name, model_version=self.manifest.version,
            cold_start=user is None,
        )
        for index, title in zip(chosen.tolist(), titles):
            response.items.append(ranker_pb2.RankedItem(
                item_id=int(found.ids[index]), score=float(scores[index]), title=title,
                category=CATEGORIES[int(categories[index])], sources=found.source_names(index),
            ))
        response.hops.extend(hops.hops)
        return response


class RankerServicer(ranker_pb2_grpc.RankerServicer):
    """The gRPC face of a Ranker core."""

    def __init__(self, core: Ranker) -> None:
        self.core = core

    async def Rank(self, request: ranker_pb2.RankRequest, context: grpc.aio.ServicerContext) -> ranker_pb2.RankResponse:
        if request.max_batch_delay_us:  # it may wait for a batch: off the event loop, so others can join it
            return await asyncio.to_thread(serve_unary, self.core.rank, request)
        return serve_unary(self.core.rank, request)
