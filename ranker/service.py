"""The Ranker core (retrieve, assemble features, score with the decomposed model, diversify) and its gRPC servicer."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from catalog import ChangeFollower, Schema, Store, StoredItem
from engines import ModelManifest
from errors import FailedPrecondition
from feedserve.v1 import ranker_pb2, ranker_pb2_grpc
from mesh.methods import Handler, Outputs, Tensors, serve_unary
from mesh.rpclog import annotate
from mesh.timing import HopRecorder, now_ns
from ranker.batching import Job
from ranker.blend import COLD_POPULARITY_WEIGHT, FOLLOW_WEIGHT, cold_blend, follow_blend
from ranker.cascade import top_rows
from ranker.diversity import category_shares, diversified_top_k
from ranker.features import CONTEXT_DIM, HEADS, FeatureSpace, RecentItems
from ranker.history import History
from ranker.holding import HeldVersions
from ranker.items import ItemTable
from ranker.requests import MAX_CANDIDATES, MAX_K, keep_asked, validate
from ranker.retrieval import Candidates, Retriever
from ranker.rollout import Rollout
from ranker.shadow import ShadowJob, ShadowScorer
from ranker.state import RankerState, load_state, save_state
from ranker.versions import ModelVersion, Resident

__all__ = ["Ranker", "RankerServicer", "DEFAULT_CANDIDATES", "DEFAULT_KEEP", "MAX_K", "MAX_CANDIDATES",
           "diversified_top_k"]

SERVICE = "ranker"
DEFAULT_CANDIDATES = 2_400
DEFAULT_KEEP = 300  # candidates the full model scores after the light stage (0: the full model scores all)


_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # user, context, ids, cross, scores


class Ranker(HeldVersions):
    """Ranks a catalog's items for one user with a versioned multi-objective model, following the store.

    Items come from the store's change feed (at start, everything so far; then every change as it commits).
    The item term of the first layer is computed for each item as it arrives (the item tower); a request
    computes its user and context terms once, and only the small cross term and the upper layers per candidate.
    Several versions may be loaded at once (primary, canary, shadow: ranker/rollout.py follows the routing);
    the catalog's state is shared, each version keeps its own item terms.
    """

    def __init__(self, store: Store, schema: Schema, manifest: ModelManifest, precision: str = "fp32", threads: int = 2,
                 head_weights: dict[str, float] | None = None, device: str = "cpu", max_batch_delay_us: int = 2_000,
                 poll_s: float = 0.05, follow: bool = True, clock: Callable[[], float] = time.time,
                 state_dir: Path | None = None, diversify: bool = True, cascade_keep: int = DEFAULT_KEEP,
                 routing: bool = False, cold_popularity: float = COLD_POPULARITY_WEIGHT,
                 follow_weight: float = FOLLOW_WEIGHT) -> None:
        if cascade_keep < 0:
            raise ValueError(f"cascade_keep is expected to be >= 0 (0: the full model only), got {cascade_keep}")
        self.engine_options = (precision, device, threads, head_weights)  # how every version is loaded
        self.cascade_fit: threading.Thread | None = None  # fitting the primary's light stage once items arrived
        self.cascade_keep = cascade_keep
        self.diversify = diversify  # a cap per category in a feed, calibrated to the user (ranker/diversity.py)
        self.cold_popularity = cold_popularity  # a new user's feed: popularity's weight beside the scores (ranker/blend.py)
        self.follow_weight = follow_weight  # a known user's: the weight of what follows their latest items
        self.clock = clock  # seconds since the epoch: freshness and the hour and weekday of the context
        self.space = FeatureSpace(schema, int(manifest.extra["vector_dim"]))
        self.items = ItemTable(self.space)
        self.user_attributes: dict[int, dict] = {}
        self.seen: dict[int, set[int]] = {}  # user -> items they interacted with (left out of their feeds)
        self.history = History()  # user -> their latest positive items and activity (the cross part's history columns)
        self.store = store
        self.check_space(manifest)
        primary = ModelVersion(manifest, precision, device, threads, head_weights)
        self.resident = Resident.of(primary)  # swapped whole; a request reads it once
        self.loading: list[ModelVersion] = []  # versions being loaded: the change feed marks their changed rows
        self.retriever = Retriever(self.items)
        self.max_batch_delay_s = max_batch_delay_us / 1e6
        primary.fit_terms(self.items.capacity)
        self._lock = threading.Lock()  # the item table, its terms and the index change together
        self.shadow = ShadowScorer()  # before the first ranking (the cascade's fit ranks): it brackets every one
        self.state_dir, self.resumed_from = state_dir, 0
        saved = load_state(state_dir, self.items, primary.key, schema.name) if state_dir is not None else None
        if saved is not None:  # resume: no reload of what was applied, no item tower over it again
            primary.fit_terms(self.items.capacity)
            primary.terms[:len(saved.terms)] = saved.terms
            self.user_attributes, self.seen, self.resumed_from = saved.users, saved.seen, saved.sequence
            self.history = saved.history
        self.follower = ChangeFollower(store, self._apply, after=self.resumed_from, poll_s=poll_s)
        self._loading = True
        self.follower.poll()  # everything committed so far, before the first request
        self.retriever.rebuild(self._lock)  # clusters (and IVF, when big) over the whole catalog, before serving
        if cascade_keep:
            self.start_cascade(primary)
        self._loading = False
        self.rollout = Rollout(self, primary, store) if routing else None
        if follow:
            self.follower.start()
            if self.rollout is not None:
                self.rollout.start()

    # the primary's parts, by their old names
    manifest = property(lambda self: self.resident.primary.manifest)
    engine = property(lambda self: self.resident.primary.engine)
    batcher = property(lambda self: self.resident.primary.batcher)
    light = property(lambda self: self.resident.primary.light)
    head_weights = property(lambda self: self.resident.primary.head_weights)
    cold_start = property(lambda self: self.resident.primary.cold_start)

    def handlers(self) -> dict[str, Handler]:
        return {"Rank": self.rank, "Models": self.models}

    def check_space(self, manifest: ModelManifest) -> None:
        space = int(manifest.extra.get("space", 0))
        if space != self.store.active_space():
            raise FailedPrecondition(
                f"{manifest.name}/{manifest.version} was trained for learned space {space}, but {self.store.name} "
                f"serves space {self.store.active_space()}: publish the model's space first (feedserve up does)")

    @property
    def _model_key(self) -> str:
        return self.resident.primary.key

    def save_state(self) -> None:
        """Write the derived state (a copy taken under the lock; written outside it) so that a restart resumes."""
        if self.state_dir is None:
            return
        with self._lock:
            primary = self.resident.primary
            copy, n = self.items.copy(), self.items.size
            state = RankerState(self.follower.applied, primary.key, self.space.schema.name, primary.terms[:n].copy(),
                                dict(self.user_attributes), {u: set(s) for u, s in self.seen.items()},
                                self.history.copy())
        save_state(self.state_dir, copy, state)

    def close(self) -> None:
        if self.rollout is not None:
            self.rollout.stop()
        self.follower.stop()
        self.retriever.join_rebuild()
        self.shadow.close()
        self.save_state()

    def _apply(self, changed: list[StoredItem], reached: int) -> None:
        """One batch of the change feed: items, then the popularity and user attributes it brought. The item tower
        runs outside the lock, so requests keep flowing while new items are coded."""
        after = self.follower.applied
        with self._lock:
            added, removed = self.items.apply(changed)
            coding = []
            for model in self.held():
                if model.dirty is not None:  # loading: it codes these rows again once it has coded the rest
                    model.dirty.update(added.tolist())
                else:
                    coding.append(model)
        terms = [(model, model.item_terms(self.items, added)) for model in coding] if len(added) else []
        event_users, popular, kinds, stamps = self.store.event_rows(after, reached)
        users = self.store.users_changed(after, reached)
        deleted = self.store.users_deleted(after, reached)
        with self._lock:
            for model, coded in terms:
                model.fit_terms(self.items.capacity)
                model.set_terms(added, coded)
            self.retriever.remove(removed)
            self.retriever.add(added)
            self.items.add_popularity(popular)
            if len(popular):
                self.retriever.popularity_changed()
            self.user_attributes.update(users)
            for user, item in zip(event_users.tolist(), popular.tolist()):
                self.seen.setdefault(user, set()).add(item)
            self.history.add(event_users, popular, kinds, stamps)
            for user in deleted:  # a deleted user leaves nothing here: not what they saw, not their attributes
                self.seen.pop(user, None)
                self.user_attributes.pop(user, None)
                self.history.forget(user)
        if not self._loading and self.retriever.wants_rebuild():
            self.retriever.rebuild_in_background(self._lock)
        primary = self.resident.primary
        if not self._loading and self.cascade_keep and primary.light is None and not primary.fitting and len(added):
            self._fit_cascade_in_background(primary)

    def models(self, request: ranker_pb2.ModelsRequest, tensors: Tensors, outputs: Outputs) -> ranker_pb2.ModelsStatus:
        """The versions held, what they occupy, the routing's versions not loaded (and why), the shadow's figures."""
        status = ranker_pb2.ModelsStatus(shadow=self.shadow.figures())
        for role, model in self.resident.roles():
            status.models.append(ranker_pb2.ResidentModel(name=model.manifest.name, version=model.version, role=role,
                                                          resident_bytes=model.resident_bytes))
        if self.rollout is not None:
            status.not_loaded.update(self.rollout.not_loaded)
            status.memory_budget_bytes = self.rollout.budget_bytes
        return status

    def _context(self, request: ranker_pb2.RankRequest) -> np.ndarray:
        now = time.gmtime(self.clock())
        fields = self.space.check_context(request.context.fields)
        return self.space.context_features(np.array([now.tm_hour]), np.array([now.tm_wday]), [fields],
                                           request.context.feature_tag)

    def _wait_for_catalog(self, request: ranker_pb2.RankRequest) -> bool:
        """Read-your-writes: True when the catalog is applied up to min_sequence (waiting within the request's wait)."""
        if request.min_sequence <= self.follower.applied:
            return True
        return self.follower.wait_for(request.min_sequence, request.min_sequence_wait_ms / 1e3)

    def rank(self, request: ranker_pb2.RankRequest, tensors: Tensors, outputs: Outputs,
             model: ModelVersion | None = None, quiet: bool = False) -> ranker_pb2.RankResponse:
        """Tensors are used where they arrived (a ring slot or the gRPC message): ids and context are bound
        to the engine as they are, and all scores are written straight into the response. The version answering
        is chosen once, from the versions resident when the request began (`model`: this one, and no shadow;
        `quiet`: on its one-thread engine, for background work)."""
        user, given, context = validate(request, tensors, self.space.dim, len(self.items))
        resident = self.resident
        answering = model or resident.answering(request.user_id, request.model_version)
        family = resident.family
        sampled = (model is None and resident.shadow is not None and family is not None
                   and random.random() < family.shadow_share)
        with self.shadow.ranking():
            response, job = self._rank(request, tensors, outputs, answering, user, given, context, sampled, quiet)
        if job is not None and resident.shadow is not None:  # scored after the answer, on spare capacity
            self.shadow.offer(ShadowJob(resident.shadow, answering.key, *job, queued_at=time.monotonic()))
        return response

    def _recent(self, user: int, width: int) -> tuple[RecentItems | None, np.ndarray]:
        """The user's latest positive items as the cross part reads them (None: no events yet), and their rows,
        newest first. Under the lock."""
        entry = self.history.of(user)
        if entry is None:
            return None, np.zeros(0, np.int64)
        rows = entry.rows()
        rows = rows[rows < self.items.size]
        return RecentItems(self.items.vectors[rows, :width], self.items.content[rows], entry.events), rows

    def _rank(self, request: ranker_pb2.RankRequest, tensors: Tensors, outputs: Outputs, model: ModelVersion,
              user: np.ndarray | None, given: np.ndarray | None, context: np.ndarray | None,
              for_shadow: bool = False, quiet: bool = False) -> tuple[ranker_pb2.RankResponse, _Rows | None]:
        """The ranking itself; with `for_shadow`, also a copy of what the shadow needs to score the same rows."""
        hops = HopRecorder(SERVICE)
        known = user is not None
        if user is None:
            user = model.cold_start
        elif model.cold_start is not None:  # learned users are of unit length: a vector drift created at an item's
            norm = float(np.linalg.norm(user))  # place need not be, and the model reads direction, not length
            if norm > 0:
                user = user / norm
        with hops.stage("catalog_wait"):
            caught_up = self._wait_for_catalog(request)
        with hops.stage("retrieval"):
            with self._lock:
                sequence = self.follower.applied
                width = self.retriever.width  # the coordinates any servable item uses: the rest are zero
                recent, recent_rows = self._recent(request.user_id, width)
                if given is not None:
                    found = Candidates(ids=given, sources=np.zeros(len(given), np.uint8), scores=np.zeros(len(given), np.float32))
                else:
                    found = self.retriever.retrieve(user, request.candidate_count or DEFAULT_CANDIDATES)
                found = keep_asked(request, tensors, found, self.items, self.seen)
                rows = found.ids - 1
                vectors, categories = self.items.vectors[rows, :width], self.items.category[rows]
                published, popularity, trend = self.items.published[rows], self.items.popularity[rows], self.items.trend[rows]
                recent_categories = self.items.category[recent_rows]
        with hops.stage("features"):
            # the diversity cap's shares, over every candidate: the cascade's cut narrows them to the user's taste
            shares = category_shares(categories, popularity, recent_categories) if self.diversify else None
            attributes = self.user_attributes.get(request.user_id)
            users = user[None, :] if user is not None else None
            narrow = user[None, :width] if user is not None else None  # for user.item with the items' coordinates
            user_part = self.space.user_features(users, [attributes])
            context_part = context.reshape(1, CONTEXT_DIM) if context is not None else self._context(request)
            ranks, considered = None, len(rows)
            follows = model.transitions.scores(recent_rows, rows)
            if narrow is not None:
                dot = vectors @ narrow[0]
                ranks = np.empty(len(rows), np.int64)  # among all candidates, whether or not the full model sees them
                ranks[np.argsort(-dot, kind="stable")] = np.arange(len(rows))
                light = model.light
                if light is not None and len(rows):
                    scored = light.scores(self._request_part(model, user_part, context_part), model.unit_terms[rows], dot)
                    if recent_rows.size:  # keep what the blend after the model would lift, not the model's best alone
                        scored = follow_blend(scored, follows[:, 0], self.follow_weight)
                    kept = top_rows(scored, max(self.cascade_keep, request.k))  # never fewer than the feed asks
                    if len(kept) < len(rows):
                        found = Candidates(ids=found.ids[kept], sources=found.sources[kept], scores=found.scores[kept])
                        rows, vectors, categories = rows[kept], vectors[kept], categories[kept]
                        published, popularity, ranks, trend = published[kept], popularity[kept], ranks[kept], trend[kept]
                        follows = follows[kept]
            cross = self.space.cross_features(narrow, self.space.user_crosses(attributes), vectors, categories,
                                              found.sources, self.clock() - published, popularity, ranks,
                                              self.items.content[rows] if recent is not None else None, recent, trend,
                                              follows)
            n = len(rows)
            scores = outputs.empty("scores", np.float32, (n,)) if request.return_all_scores else np.empty(n, np.float32)
            heads = np.empty((n, len(HEADS)), dtype=np.float32)
        if n:  # two handoffs: waiting for the engine (or for company), then the model run itself
            window = min(request.max_batch_delay_us / 1e6, self.max_batch_delay_s)
            job = Job(user_part, context_part, found.ids, cross, scores, heads, window)
            queued = now_ns()
            (model.quiet_batcher if quiet else model.batcher).submit(job)
            hops.add("queued", queued, job.started_ns)
            hops.add("model", job.started_ns, now_ns(), job.cpu_ns)  # its share of the run's CPU
            if request.head_weights:  # this request's own blend of the objectives
                blend = model.head_weights.copy()
                for head, weight in request.head_weights.items():
                    blend[HEADS.index(head)] = weight
                scores[...] = heads @ blend
        model_scores = scores.copy() if for_shadow and n else None  # the shadow's model is compared with this model
        if not known and recent is None and n:  # a new user: nothing of theirs to rank by
            scores[...] = cold_blend(scores, popularity, self.cold_popularity)
        elif recent_rows.size and n:  # what follows the user's latest items, beside the model (ranker/blend.py)
            scores[...] = follow_blend(scores, follows[:, 0], self.follow_weight)
        chosen = (diversified_top_k(scores, categories, min(request.k, n), shares) if self.diversify
                  else np.argsort(-scores, kind="stable")[:min(request.k, n)])
        if request.return_all_scores:
            outputs.empty("candidate_ids", np.int64, (n,))[...] = found.ids
        annotate(model=model.manifest.name, model_version=model.manifest.version, candidates=considered, scored=n,
                 catalog_sequence=sequence)
        response = ranker_pb2.RankResponse(
            candidates_considered=considered, candidates_scored=n, model_name=model.manifest.name, model_version=model.manifest.version,
            cold_start=not known, catalog_sequence=sequence, behind=not caught_up,
        )
        items = self.items
        for index in chosen.tolist():
            row = int(rows[index])
            response.items.append(ranker_pb2.RankedItem(
                item_id=row + 1, score=float(scores[index]), title=items.titles[row], category=items.first_category[row],
                sources=found.source_names(index), external_id=items.external[row],
            ))
        response.hops.extend(hops.hops)
        shadow = None
        if model_scores is not None:
            shadow = (user_part.copy(), np.array(context_part, np.float32, copy=True), found.ids.copy(), cross.copy(),
                      model_scores)
        return response, shadow


class RankerServicer(ranker_pb2_grpc.RankerServicer):
    """The gRPC face of a Ranker core."""

    def __init__(self, core: Ranker) -> None:
        self.core = core

    async def Rank(self, request: ranker_pb2.RankRequest, context: grpc.aio.ServicerContext) -> ranker_pb2.RankResponse:
        if request.max_batch_delay_us or request.min_sequence:  # it may wait (for a batch, for the catalog): off the loop
            return await asyncio.to_thread(serve_unary, self.core.rank, request)
        return serve_unary(self.core.rank, request)

    async def Models(self, request: ranker_pb2.ModelsRequest, context: grpc.aio.ServicerContext) -> ranker_pb2.ModelsStatus:
        return serve_unary(self.core.models, request)
