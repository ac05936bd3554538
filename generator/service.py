"""The generator service: validate, answer from a cache, or plan once and stream the plan's stages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np

from catalog.store import Store
from errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from feedserve.v1 import generator_pb2, generator_pb2_grpc
from generator import metrics
from generator.caches import Answer, SemanticCache, request_scope
from generator.pipeline import Pipeline, PlanRun
from generator.planner import MAX_ITEMS, make_plan
from generator.regex import compile_pattern
from generator.rollout import TierRouting
from mesh.clients import ParamServerClient
from mesh.logging import get_logger
from mesh.tags import TagBook, check_feature_tag
from mesh.timing import HopRecorder, now_ns

__all__ = ["Generator", "GeneratorServicer", "Limits", "MAX_TOKENS"]

MAX_TOKENS = 1024
# patterns are built one at a time on their own thread: a flood of hostile ones waits here, not in the loop's
# default executor that cache lookups and catalog reads share
_PATTERN_BUILDER = ThreadPoolExecutor(1, thread_name_prefix="pattern")


@dataclass(frozen=True)
class Limits:
    """Request sizes the generator accepts."""

    prompt_chars: int = 8_000
    stops: int = 8
    stop_chars: int = 64
    words: int = 2_000
    pattern_chars: int = 1_000


class Generator:
    """The core, independent of gRPC: caches in front of the planner and the pipeline."""

    def __init__(self, pipeline: Pipeline, topics: tuple[str, ...], centroids: np.ndarray | None = None,
                 paramserver: ParamServerClient | None = None, semantic: SemanticCache | None = None,
                 cpu_second_price: float = 0.0000125, limits: Limits = Limits(), max_in_flight: int = 16,
                 tiers: TierRouting | None = None, store: Store | None = None) -> None:
        self.pipeline, self.pool = pipeline, pipeline.pool
        self.store = store  # the catalog: items' titles and texts for teasers
        self.tiers = tiers  # the tiers' versions by the model routing (None: the pipeline's own names)
        self.topics, self.centroids, self.paramserver = topics, centroids, paramserver
        self.semantic = semantic
        self.cpu_second_price, self.limits = cpu_second_price, limits
        self.max_in_flight, self.in_flight = max_in_flight, 0
        self._tags = TagBook()  # the cost metric's label values, bounded
        self._log = get_logger("generator")

    def validate(self, request: generator_pb2.GenerateRequest) -> None:
        """INVALID_ARGUMENT naming the field, before any work."""
        lim = self.limits
        if not request.prompt.strip():
            raise InvalidArgument("prompt", "prompt is empty")
        if len(request.prompt) > lim.prompt_chars:
            raise InvalidArgument("prompt", f"prompt has {len(request.prompt)} characters; the limit is {lim.prompt_chars}")
        if not 1 <= request.max_tokens <= MAX_TOKENS:
            raise InvalidArgument("max_tokens", f"max_tokens is expected in 1..{MAX_TOKENS}, got {request.max_tokens}")
        router = self.pipeline.router
        names = {"small": router.small, "large": router.large}
        candidates = [names.get(request.model, request.model)] if request.model else [router.small, router.large]
        for name in candidates:  # an unknown model raises here, naming the known ones
            context = self.pool.spec(name).context
            if request.max_tokens >= context:
                raise InvalidArgument("max_tokens", f"max_tokens {request.max_tokens} leaves no room for the prompt "
                                                    f"in model {name}'s context of {context} tokens")
        if len(request.stop) > lim.stops or any(not s or len(s) > lim.stop_chars for s in request.stop):
            raise InvalidArgument("stop", f"stop takes at most {lim.stops} non-empty sequences of up to "
                                          f"{lim.stop_chars} characters")
        for name in ("banned_words", "allowed_words"):
            words = getattr(request, name)
            if len(words) > lim.words or any(not w.strip() or not w.replace("'", "").replace("-", "").isalnum()
                                             for w in words):
                raise InvalidArgument(name, f"{name} takes at most {lim.words} single words (letters and digits)")
        if len(request.item_ids) > MAX_ITEMS:
            raise InvalidArgument("item_ids", f"item_ids takes at most {MAX_ITEMS} items, got {len(request.item_ids)}")
        if request.item_ids and self.store is None:
            raise FailedPrecondition("item_ids: teasers need the catalog; start the generator with --store")
        if len(request.pattern) > lim.pattern_chars:
            raise InvalidArgument("pattern", f"pattern is longer than {lim.pattern_chars} characters")
        check_feature_tag(request.context.feature_tag)

    async def _cached(self, request: generator_pb2.GenerateRequest) -> tuple[Answer | None, float]:
        """The semantic cache's answer, if any, and the CPU seconds the lookup (the encoder) took on its thread."""
        if self.semantic is None:
            return None, 0.0
        semantic = self.semantic

        def lookup() -> tuple[Answer | None, float]:
            begun = time.thread_time()
            found = semantic.get(request_scope(request), request.prompt)
            return (found[0] if found is not None else None), time.thread_time() - begun

        return await asyncio.to_thread(lookup)

    async def _items(self, request: generator_pb2.GenerateRequest) -> dict[int, tuple[str, str, list[str]]]:
        """Each asked item's title, text and categories; INVALID_ARGUMENT naming the ids the catalog lacks."""
        if not request.item_ids or self.store is None:
            return {}
        wanted = list(dict.fromkeys(request.item_ids))
        found = await asyncio.to_thread(self.store.item_texts, wanted)
        missing = [i for i in wanted if i not in found]
        if missing:
            # hidden, deleted and never-known items get the same answer: nothing tells them apart
            raise InvalidArgument("item_ids", f"unknown items {missing[:20]} (feedserve's numeric item ids)")
        return found

    async def _topic(self, user_id: int, deadline: float | None, count: int = 1) -> str:
        """The user's top interests (`count` of them, joined): the category centroids nearest their current
        vector in the paramserver."""
        fallback = self.topics[0]
        if self.paramserver is None or self.centroids is None:
            return fallback
        timeout = 0.5 if deadline is None else max(0.01, min(0.5, deadline - time.monotonic()))
        try:
            user = await self.paramserver.user_vector(user_id, timeout)
        except Unavailable as exc:  # a post about a popular topic beats no post
            self._log.warning("user topic unavailable", user_id=user_id, error=str(exc))
            return fallback
        if user.vector is None:
            return fallback
        order = np.argsort(-(self.centroids @ user.vector), kind="stable")[:count]
        names = [self.topics[int(i)] for i in order]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    async def generate(self, request: generator_pb2.GenerateRequest,
                       deadline: float | None) -> AsyncIterator[generator_pb2.GenerateChunk]:
        """Validate (the pattern's automaton is built here, bounded, on its own thread and before a slot is
        taken), refuse past `max_in_flight` generations, then answer (see `_generate`)."""
        self.validate(request)
        if request.pattern:
            await asyncio.get_running_loop().run_in_executor(_PATTERN_BUILDER, compile_pattern, request.pattern)
        if self.in_flight >= self.max_in_flight:
            raise ResourceExhausted(f"generator overloaded: {self.in_flight} generations in flight "
                                    f"(limit {self.max_in_flight})")
        self.in_flight += 1
        try:
            async for chunk in self._generate(request, deadline):
                yield chunk
        finally:
            self.in_flight -= 1

    async def _generate(self, request: generator_pb2.GenerateRequest,
                        deadline: float | None) -> AsyncIterator[generator_pb2.GenerateChunk]:
        # CPU is charged per thread, never the process's: other requests decode at the same time
        started, cpu_seconds = time.monotonic(), 0.0
        hops = HopRecorder("generator")
        tag = self._tags.book(request.context.feature_tag)
        items = await self._items(request)
        with hops.stage("plan"):
            plan = make_plan(request, self.topics, items)
        answer = None
        # an answer built on the user's live vector is never kept, nor looked for: the gateway drops its
        # exact copy when the user interacts, and a semantic copy here would outlive that
        cacheable = self.semantic is not None and not plan.needs_user_topic
        if cacheable:
            with hops.stage("cache"):
                answer, cpu_seconds = await self._cached(request)
            metrics.CACHE.labels("semantic" if answer is not None else "miss").inc()
        if answer is not None:  # complete already: the whole text rides in the final chunk, one message
            usage = generator_pb2.Usage(models=answer.models, cache="semantic", ttft_ms=(time.monotonic() - started) * 1e3,
                                        compute_seconds=cpu_seconds)
            usage.cost = usage.compute_seconds * self.cpu_second_price
            metrics.COST.labels(tag).inc(usage.cost)
            yield generator_pb2.GenerateChunk(text="".join(text for _, text in answer.pieces), stage=answer.pieces[-1][0],
                                              final=True, usage=usage, hops=hops.hops)
            return
        topic = plan.topic
        if plan.needs_user_topic:
            with hops.stage("evidence"):
                topic = await self._topic(request.user_id, deadline, count=2 if plan.kind == "teasers" else 1)
        run = PlanRun([None] * len(plan.stages), concurrent=False)
        pieces: list[list[str]] = [[] for _ in plan.stages]
        stream_start = now_ns()
        router = self.tiers.router_for(request.user_id, self.pipeline.router) if self.tiers is not None else None
        async for stage, text in self.pipeline.run(plan, topic, deadline, bool(request.model), run, router):
            pieces[stage].append(text)
            yield generator_pb2.GenerateChunk(text=text, stage=stage)
        hops.add("stages-concurrent" if run.concurrent else "stages-in-sequence", stream_start, now_ns(),
                 int(sum(r.cpu_seconds for r in run.finished) * 1e9))
        usage = self._usage(run, started, cpu_seconds + sum(r.cpu_seconds for r in run.finished), tag)
        answer = Answer(tuple((i, "".join(p)) for i, p in enumerate(pieces)), tuple(usage.models),
                        usage.tokens_in, usage.tokens_out)
        if cacheable and self.semantic is not None:
            await asyncio.to_thread(self.semantic.put, request_scope(request), request.prompt, answer, request.user_id)
        yield generator_pb2.GenerateChunk(final=True, usage=usage, hops=hops.hops)

    def _usage(self, run: PlanRun, started: float, cpu_seconds: float, tag: str) -> generator_pb2.Usage:
        usage = generator_pb2.Usage(escalated=run.escalated, compute_seconds=cpu_seconds)
        logprob = 0.0
        models: list[str] = []
        for result in run.finished:
            spent = [(a.tokens_in, a.tokens_out, name) for a, name in zip(result.abandoned, result.models)]
            spent.append((result.generation.tokens_in, result.generation.tokens_out, result.generation.model))
            for tokens_in, tokens_out, name in spent:
                usage.tokens_in += tokens_in
                usage.tokens_out += tokens_out
                usage.token_cost += (tokens_in + tokens_out) * self.pool.spec(name).price_per_1k_tokens / 1000
                metrics.TOKENS.labels(name, "in").inc(tokens_in)
                metrics.TOKENS.labels(name, "out").inc(tokens_out)
                if name not in models:
                    models.append(name)
            logprob += result.generation.logprob_sum
        usage.models.extend(models)
        out = sum(r.generation.tokens_out for r in run.finished)
        usage.mean_logprob = logprob / out if out else 0.0
        first_model = run.finished[0].generation.model
        if run.first_piece_at is not None:
            usage.ttft_ms = (run.first_piece_at - started) * 1e3
            metrics.TTFT_SECONDS.labels(first_model).observe(run.first_piece_at - started)
        if len(run.pieces_at) > 1:
            gap = (run.pieces_at[-1] - run.pieces_at[0]) / (len(run.pieces_at) - 1)
            usage.inter_token_ms = gap * 1e3
            metrics.INTER_TOKEN_SECONDS.labels(first_model).observe(gap)
        usage.cost = usage.token_cost + cpu_seconds * self.cpu_second_price
        metrics.COST.labels(tag).inc(usage.cost)
        if run.escalated:
            metrics.ESCALATIONS.inc(sum(len(r.abandoned) for r in run.finished))
        return usage


class GeneratorServicer(generator_pb2_grpc.GeneratorServicer):
    """gRPC over the core; errors become their status in mesh/rpclog.py's interceptor."""

    def __init__(self, core: Generator) -> None:
        self.core = core

    async def Generate(self, request: generator_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[generator_pb2.GenerateChunk]:
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        async for chunk in self.core.generate(request, deadline):
            yield chunk
