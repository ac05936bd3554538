"""The Gateway servicer: sheds load, validates, fans out under the caller's deadline, and degrades rather than fails.

The degradation ladder, decided per request from the time left and what ranking has been costing:
full ranking -> fewer candidates -> the user's cached feed (even a stale one) -> the popular/fresh
fallback feed. A dependency that keeps failing opens its circuit breaker and the same ladder answers.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np

from catalog import ITEM, USER, Store
from catalog.records import OBJECTIVES, check_event_time, check_id, check_key
from errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FeedserveError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)
from feedserve.v1 import gateway_pb2, gateway_pb2_grpc, generator_pb2, paramserver_pb2, ranker_pb2
from gateway.auth import events_keep_their_time
from gateway.breaker import CircuitBreaker
from gateway.cache import AnswerCache, FeedCache, answer_key
from gateway.catalog_api import KNOWN_EVENTS, event_from_proto
from gateway.cost import CostLedger, request_cpu_seconds
from gateway.cursors import PageCursors
from gateway.modes import ModeController
from gateway.online import OnlineMetrics
from gateway.rollout import GatewayRouting
from mesh.clients import GeneratorClient, ParamServerClient, RankerClient
from mesh.rpclog import annotate, request_id
from mesh.tags import check_feature_tag
from mesh.tensors import to_tensor
from mesh.timing import HopRecorder, cpu_ns

__all__ = ["GatewayService", "DEFAULT_K", "MAX_K", "DEFAULT_TIMEOUT_S"]

SERVICE = "gateway"
DEFAULT_K = 20
MAX_K = 500
DEFAULT_TIMEOUT_S = 2.0  # for callers that send no deadline
GENERATE_TIMEOUT_S = 60.0  # generation streams for longer; callers without a deadline get this one
MARGIN_S = 0.003  # kept back from every deadline to build and send the answer
FALLBACK_K = 500
PAGE_DEPTH = 200  # a first page ranks this deep (at most MAX_K); later pages continue from a cursor
_MAX_LABEL_CHARS = 256
MAX_LIST = 1_000  # entries of each list a feed request may carry (exclusions, labels): work per request is bounded


class _Budget:
    """The time left of the caller's deadline (or the default), minus the margin for answering."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        remaining = context.time_remaining()
        self.deadline = time.monotonic() + (DEFAULT_TIMEOUT_S if remaining is None else remaining) - MARGIN_S

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def require(self) -> float:
        left = self.left()
        if left <= 0:
            raise DeadlineExceeded("deadline passed before the feed was ready")
        return left


def _items(ranked: ranker_pb2.RankResponse | gateway_pb2.FeedResponse, k: int) -> list[gateway_pb2.FeedItem]:
    """The first k items, each with its position in the ranking (with its score: the propensity record)."""
    return [gateway_pb2.FeedItem(item_id=i.item_id, score=i.score, title=i.title, category=i.category, sources=i.sources,
                                 id=i.external_id if isinstance(i, ranker_pb2.RankedItem) else i.id, position=n)
            for n, i in enumerate(list(ranked.items)[:k])]


def _plain(request: gateway_pb2.FeedRequest) -> bool:
    """A feed with no options: the one that is cached, and the one the fallback can stand in for."""
    return not (request.min_sequence or request.include_seen or request.exclude or request.exclude_ids
                or request.include_labels or request.exclude_labels or request.published_after
                or request.objective_weights or request.context.fields)


_RANK_MARGIN_S = 0.05


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, paramserver: ParamServerClient, ranker: RankerClient, modes: ModeController | None = None,
                 cache: FeedCache | None = None, breaker_cooldown_s: float = 2.0, max_in_flight: int | None = None,
                 ledger: CostLedger | None = None, generator: GeneratorClient | None = None,
                 answers: AnswerCache | None = None, store: Store | None = None,
                 online: OnlineMetrics | None = None, routing: GatewayRouting | None = None,
                 pages: PageCursors | None = None) -> None:
        self.paramserver, self.ranker, self.generator = paramserver, ranker, generator
        self.store = store  # the catalog: Interact by the product's own ids logs the event there
        # cursors sealed under the store's shared key: any replica on the same store continues them
        self.pages = pages if pages is not None else (PageCursors.key_from_store(store) if store is not None
                                                      else PageCursors())
        self.answers = answers if answers is not None else AnswerCache()
        self.modes = modes or ModeController()
        self.cache = cache or FeedCache()
        self.breakers = {"paramserver": CircuitBreaker("paramserver", cooldown_s=breaker_cooldown_s),
                         "ranker": CircuitBreaker("ranker", cooldown_s=breaker_cooldown_s)}
        self.max_in_flight = max_in_flight
        self.rank_cost_s = 0.0  # EWMA of a full ranking call at the current candidate count
        self.fallback: ranker_pb2.RankResponse | None = None
        self.counters: dict[str, Any] = {"degraded": {}, "shed": 0}  # degraded: by the first word of the reason
        self.ledger = ledger or CostLedger()
        self.on_answer: Callable[[gateway_pb2.FeedResponse], None] | None = None  # e.g. Dashboard.observe
        self.online = online or OnlineMetrics()  # per model version, from served feeds and the interactions naming them
        self.routing = routing  # which version answers each user (None: the ranker's own choice)

    async def refresh_fallback(self) -> bool:
        """Fetch the popular/fresh feed (a cold-start ranking) that answers when nothing better can."""
        try:
            self.fallback = await self.ranker.rank(ranker_pb2.RankRequest(k=FALLBACK_K, candidate_count=1_000), None, 5.0)
            return True
        except FeedserveError:
            return False

    async def _guarded(self, name: str, call):
        """Run `call()` through the dependency's breaker; refused at once while the circuit is open."""
        breaker = self.breakers[name]
        if not breaker.allow():
            raise Unavailable(name, "circuit open after repeated failures")
        try:
            result = await call()
        except (Unavailable, DeadlineExceeded):
            breaker.failed()
            raise
        breaker.succeeded()
        return result

    def _degrade(self, response: gateway_pb2.FeedResponse, reason: str) -> None:
        response.degraded, response.degraded_reason = True, reason
        cause = reason.split(":")[0]
        degraded = self.counters["degraded"]
        degraded[cause] = degraded.get(cause, 0) + 1

    def _fallback_or_cache(self, user_id: int, k: int, response: gateway_pb2.FeedResponse, why: str,
                           tenant: str) -> None:
        """The last rungs of the ladder: the user's cached feed (this tenant's), else the fallback feed, else UNAVAILABLE."""
        cached = self.cache.get(user_id, k, stale_ok=True, tenant=tenant)
        if cached is not None:
            response.items.extend(cached.items)
            response.cached, response.model_version = True, cached.model_version
            self._degrade(response, f"{why}: cached feed")
        elif self.fallback is not None:
            response.items.extend(_items(self.fallback, k))
            response.model_version = f"{self.fallback.model_name}/{self.fallback.model_version}"
            self._degrade(response, f"{why}: popular/fresh fallback")
        else:
            raise Unavailable(why.split(" ")[0], "no fallback feed is loaded yet")

    async def Feed(self, request: gateway_pb2.FeedRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.FeedResponse:
        received = time.monotonic_ns()
        modes = self.modes
        limit = self.max_in_flight or modes.settings.max_in_flight
        if modes.in_flight >= limit:
            self.counters["shed"] += 1
            raise ResourceExhausted(f"gateway overloaded: {modes.in_flight} requests in flight (limit {limit})")
        modes.in_flight += 1
        try:
            return await self._feed(request, context, received)
        finally:
            modes.in_flight -= 1
            modes.observe((time.monotonic_ns() - received) / 1e9)

    async def _user(self, request: gateway_pb2.FeedRequest) -> int:
        """The numeric id of the feed's user: given, or looked up by the product's id (0: not known yet)."""
        if request.user and request.user_id:
            raise InvalidArgument("user", "give user or user_id, not both")
        if request.user:
            check_id(request.user, "user")
            if self.store is None:
                raise FailedPrecondition("users by external id need the catalog store (start the gateway with --store)")
            return int((await asyncio.to_thread(self.store.resolve, USER, [request.user]))[0])
        if request.user_id == 0:
            raise InvalidArgument("user_id", "is required (or name the user by `user`)")
        return check_key(request.user_id, "user_id")

    async def _exclusions(self, request: gateway_pb2.FeedRequest) -> np.ndarray | None:
        ids = [check_key(value, f"exclude_ids[{row}]") for row, value in enumerate(request.exclude_ids)]
        if request.exclude:
            if self.store is None:
                raise FailedPrecondition("exclude by external id needs the catalog store (start the gateway with --store)")
            for row, external in enumerate(request.exclude):
                check_id(external, f"exclude[{row}]")
            ids += [i for i in (await asyncio.to_thread(self.store.resolve, ITEM, list(request.exclude))).tolist() if i]
        return np.asarray(ids, np.int64) if ids else None

    async def _feed(self, request: gateway_pb2.FeedRequest, context: grpc.aio.ServicerContext, received: int) -> gateway_pb2.FeedResponse:
        hops = HopRecorder(SERVICE)
        k = request.k if request.HasField("k") else DEFAULT_K
        if not 1 <= k <= MAX_K:
            raise InvalidArgument("k", f"expected 1..{MAX_K}, got {k}")
        check_feature_tag(request.context.feature_tag)
        for name in ("exclude_ids", "exclude", "include_labels", "exclude_labels"):
            values = getattr(request, name)
            if len(values) > MAX_LIST:
                raise InvalidArgument(name, f"at most {MAX_LIST} entries, got {len(values)}")
            for row, label in enumerate(values if name.endswith("labels") else ()):
                if len(label) > _MAX_LABEL_CHARS:
                    raise InvalidArgument(f"{name}[{row}]", f"at most {_MAX_LABEL_CHARS} characters, got {len(label)}")
        for head, weight in request.objective_weights.items():
            if head not in OBJECTIVES:
                raise InvalidArgument(f"objective_weights.{head}", f"unknown objective, expected one of {', '.join(OBJECTIVES)}")
            if not math.isfinite(weight):
                raise InvalidArgument(f"objective_weights.{head}", f"expected a finite number, got {weight}")
        user_id = await self._user(request)
        tenant = request.context.tenant  # set from the API key at the door (gateway/auth.py): caches never cross it
        budget, rid = _Budget(context), request_id()
        # the feed's id is ours, never the client's x-request-id: interactions are attributed by it (with the
        # tenant and the user), so nobody can name, or guess, a feed they were not served
        feed_id = secrets.token_hex(8)
        annotate(feed_id=feed_id)
        response = gateway_pb2.FeedResponse(request_id=feed_id, mode=self.modes.current)  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
        if request.cursor:  # the next page of a ranking already made
            rest = self.pages.take(request.cursor, user_id, tenant)
            if user_id and self.store is not None and await asyncio.to_thread(self.store.user_deleted, user_id):
                raise InvalidArgument("cursor", "its user was deleted since it was issued")
            response.items.extend(rest[:k])
            if len(rest) > k:
                response.next_cursor = self.pages.put(user_id, rest[k:], tenant)
            hops.add("cursor", received, time.monotonic_ns())
            return self._finish(response, hops, received, request.context.feature_tag, user_id, tenant)
        plain = _plain(request)  # only plain feeds are cached: options change the answer
        cached = self.cache.get(user_id, k, tenant=tenant) if plain and user_id else None
        if cached is not None:
            response.MergeFrom(cached)
            response.ClearField("hops")
            response.cached, response.request_id = True, feed_id
            response.mode = self.modes.current  # type: ignore[assignment]  # protoc's stubs: the enum class, not int
            hops.add("cache", received, time.monotonic_ns())
            return self._finish(response, hops, received, request.context.feature_tag, user_id, tenant)

        settings = self.modes.settings
        vector = None
        if user_id:
            try:
                with hops.awaiting("paramserver_call"):
                    user = await self._guarded(
                        "paramserver", lambda: self.paramserver.user_vector(user_id, budget.require(), rid))
                hops.extend(user.hops)
                vector = user.vector
            except (Unavailable, DeadlineExceeded) as exc:
                annotate(dependency_error=str(exc))
                self._fallback_or_cache(user_id, k, response, "paramserver unavailable", tenant)
                return self._finish(response, hops, received, request.context.feature_tag, user_id, tenant)

        count, left = settings.candidate_count, budget.left()
        if self.rank_cost_s and left < self.rank_cost_s * 1.2:
            if left >= self.rank_cost_s * 0.4:  # enough for a smaller ranking
                count = max(200, int(count * left / (self.rank_cost_s * 1.2)))
                self._degrade(response, f"deadline: {count} candidates instead of {settings.candidate_count}")
            else:
                self._fallback_or_cache(user_id, k, response, "deadline too short to rank", tenant)
                return self._finish(response, hops, received, request.context.feature_tag, user_id, tenant)
        asked = self.routing.version_for(user_id) if self.routing is not None else ""  # the canary's share, or ""
        depth = min(MAX_K, max(k, PAGE_DEPTH))  # ranked deeper than the page, so that a cursor continues it
        timeout = min(budget.require(), settings.ranker_timeout_s if not response.degraded else budget.left())
        # a read-your-writes wait leaves room to rank afterwards, with a margin (a ranking can take longer than average)
        wait_s = max(timeout - 2 * self.rank_cost_s - _RANK_MARGIN_S, 0) if request.min_sequence else 0
        rank_request = ranker_pb2.RankRequest(
            context=request.context, user_id=user_id, k=depth, candidate_count=count,
            max_batch_delay_us=settings.batch_delay_us, min_sequence=request.min_sequence,
            min_sequence_wait_ms=int(wait_s * 1e3),
            include_labels=request.include_labels, exclude_labels=request.exclude_labels,
            published_after=request.published_after, head_weights=request.objective_weights,
            include_seen=request.include_seen, model_version=asked)
        exclude = await self._exclusions(request)
        if exclude is not None:
            rank_request.exclude.CopyFrom(to_tensor(exclude))
        try:
            with hops.awaiting("ranker_call"):
                started = time.monotonic()
                ranked = await self._guarded("ranker", lambda: self.ranker.rank(rank_request, vector, timeout, rid))
            if count == settings.candidate_count and not request.min_sequence:
                cost = time.monotonic() - started
                self.rank_cost_s = cost if not self.rank_cost_s else 0.8 * self.rank_cost_s + 0.2 * cost
        except (Unavailable, DeadlineExceeded) as exc:
            annotate(dependency_error=str(exc))
            self._failed(asked)
            response.ClearField("degraded")
            response.ClearField("degraded_reason")
            why = "ranker too slow for the deadline" if isinstance(exc, DeadlineExceeded) else "ranker unavailable"
            self._fallback_or_cache(user_id, k, response, why, tenant)
            return self._finish(response, hops, received, request.context.feature_tag, user_id, tenant)
        hops.extend(ranked.hops)
        response.cold_start = ranked.cold_start
        response.model_version = f"{ranked.model_name}/{ranked.model_version}"
        response.catalog_sequence = ranked.catalog_sequence
        if ranked.behind:
            self._degrade(response, f"catalog: the ranker has applied sequence {ranked.catalog_sequence}, "
                                    f"below min_sequence {request.min_sequence}")
        items = _items(ranked, len(ranked.items))
        response.items.extend(items[:k])
        if len(items) > k:
            response.next_cursor = self.pages.put(user_id, items[k:], tenant)
        if not response.degraded and plain and user_id:
            self.cache.put(user_id, k, response, tenant=tenant)
        annotate(model=ranked.model_name, model_version=ranked.model_version, items=len(response.items))
        return self._finish(response, hops, received, request.context.feature_tag, user_id, tenant, ranked=True)

    def _finish(self, response: gateway_pb2.FeedResponse, hops: HopRecorder, received: int, feature_tag: str,
                user_id: int = 0, tenant: str = "", ranked: bool = False) -> gateway_pb2.FeedResponse:
        finished = time.monotonic_ns()
        hops.add("handle", received, finished, hops.own_cpu())
        self.online.served(response, user_id, tenant, (finished - received) / 1e6, ranked and not response.degraded)
        response.hops.extend(hops.hops)
        response.cost = self.ledger.record(feature_tag, request_cpu_seconds(response))
        if response.degraded:
            annotate(degraded=response.degraded_reason)
        if self.on_answer is not None:
            self.on_answer(response)
        return response

    def _failed(self, asked: str) -> None:
        """A ranking routed to a version failed: counted against it (the primary when the routing chose none)."""
        family = self.routing.family if self.routing is not None else None
        version = asked or (family.primary if family is not None else None)
        if family is not None and version:
            self.online.failed(f"{family.name}/{version}")

    async def Interact(self, request: gateway_pb2.InteractRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.InteractResponse:
        if request.event not in KNOWN_EVENTS:
            raise InvalidArgument("event", f"unknown event type {request.event}")
        if request.feed_request_id:
            check_id(request.feed_request_id, "feed_request_id")
        check_event_time(request.timestamp, "timestamp")
        sequence, user_id, item_id = 0, request.user_id, request.item_id
        if request.user or request.item:
            sequence, user_id, item_id = await self._log_event(request)
        else:
            if request.user_id == 0:
                raise InvalidArgument("user_id", "is required (or name the user by `user`)")
            if request.item_id == 0:
                raise InvalidArgument("item_id", "is required (or name the item by `item`)")
            check_key(user_id, "user_id")
            check_key(item_id, "item_id")
        drift = paramserver_pb2.DriftRequest(context=request.context, user_id=user_id, item_id=item_id, event=request.event,
                                             event_time=request.timestamp if events_keep_their_time() else 0)
        try:
            moved = await self.paramserver.drift(drift, _Budget(context).require(), request_id())
        except NotFound:
            if not sequence:
                raise
            # logged, but the paramserver has not applied the item's change yet: nothing to move toward
            moved = paramserver_pb2.DriftResponse(applied=False)
        self.cache.invalidate(user_id)  # read-your-writes: the next Feed ranks afresh
        self.answers.invalidate(user_id)  # and the next Generate for them writes afresh
        if request.feed_request_id:  # after the event is accepted: a refused one is never counted
            self.online.interacted(request.feed_request_id, request_id(), item_id, request.event,
                                   request.context.tenant, user_id)
        return gateway_pb2.InteractResponse(applied=moved.applied, rate=moved.rate, request_id=request_id(),
                                            sequence=sequence, held_back=moved.held_back)

    async def _log_event(self, request: gateway_pb2.InteractRequest) -> tuple[int, int, int]:
        """Log an event named by external ids durably; returns (sequence, user id, item id)."""
        if self.store is None:
            raise FailedPrecondition("interactions by external id need the catalog store (start the gateway with --store)")
        check_id(request.user, "user")
        check_id(request.item, "item")
        event = event_from_proto(request.user, request.item, request.event, request.timestamp,
                                 request.value if request.HasField("value") else None, "")
        try:
            sequence, users, items = await asyncio.to_thread(self.store.record_events, [event], int(time.time()))
        except NotFound:
            raise NotFound(f"item: unknown item {request.item!r}") from None
        return sequence, int(users[0]), int(items[0])

    async def Generate(self, request: generator_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[generator_pb2.GenerateChunk]:
        """Answer a repeat from the edge cache, or relay the generator's stream; the final chunk gains the
        gateway's hop, and its cost is booked to the feature tag beside the feeds'."""
        received, cpu_start = time.monotonic_ns(), cpu_ns()
        check_feature_tag(request.context.feature_tag)
        if not self.modes.settings.generation_enabled:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "generation is off in emergency mode")
        generator = self.generator
        if generator is None:
            raise Unimplemented("generation is not deployed in this stack (start the gateway with --generator)")
        key = answer_key(request)
        cached = self.answers.get(key)
        if cached is not None:  # the whole answer in one final chunk: nothing left to stream
            chunk = generator_pb2.GenerateChunk()
            chunk.CopyFrom(cached)
            chunk.usage.cache = "exact"
            chunk.usage.ttft_ms = (time.monotonic_ns() - received) / 1e6
            yield self._finish_generation(chunk, request, received, cpu_start)
            return
        remaining = context.time_remaining()
        timeout = GENERATE_TIMEOUT_S if remaining is None else remaining
        text: list[str] = []
        async for chunk in generator.generate(request, timeout, request_id()):
            text.append(chunk.text)
            if chunk.final:
                self.answers.put(key, request.user_id, "".join(text), chunk.usage, request.context.tenant)
                chunk = self._finish_generation(chunk, request, received, cpu_start)
            yield chunk

    def _finish_generation(self, chunk: generator_pb2.GenerateChunk, request: generator_pb2.GenerateRequest,
                           received: int, cpu_start: int) -> generator_pb2.GenerateChunk:
        hops = HopRecorder(SERVICE)
        hops.add("handle", received, time.monotonic_ns(), cpu_ns() - cpu_start)
        chunk.hops.extend(hops.hops)
        usage = chunk.usage
        usage.compute_seconds += (cpu_ns() - cpu_start) / 1e9
        usage.cost = self.ledger.record(request.context.feature_tag, usage.compute_seconds, usage.token_cost,
                                        usage.tokens_in + usage.tokens_out)
        annotate(models=",".join(usage.models), tokens_out=usage.tokens_out, cache=usage.cache)
        return chunk


async def keep_fallback_fresh(service: GatewayService, every_s: float = 60.0) -> None:
    """Refresh the fallback feed in the background: soon after start, then every `every_s`."""
    while True:
        ok = await service.refresh_fallback()
        await asyncio.sleep(every_s if ok else 1.0)  # a periodic refresh, not synchronisation
