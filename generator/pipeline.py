"""Executing a plan: each stage on its tier (with the small-first cascade), concurrently when the memory budget
holds every model at once and light-then-heavy in sequence when it does not, streamed in stage order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from errors import Internal
from generator.decoding import Abandoned, Generation, generate
from generator.planner import AUTO, TOPIC, Plan, Stage
from generator.residency import ResidencyPool

__all__ = ["RouterConfig", "Pipeline", "PlanRun", "StageResult"]


@dataclass(frozen=True)
class RouterConfig:
    """The cascade: an AUTO stage starts on `small`, unless the prompt itself is unlike what `small` knows (its
    mean log-probability under `small` below `prompt_threshold`); if the mean log-probability of its first
    `probe_tokens` tokens is below `threshold`, it is redone on `large`. Less time left than `large_min_s` keeps every
    planner-chosen stage on `small`."""

    small: str = "small"
    large: str = "large"
    threshold: float = -1.6
    probe_tokens: int = 8
    large_min_s: float = 0.2
    prompt_threshold: float = -3.0  # the small tier's mean log-probability of the prompt itself, below which it
    # is not tried: its trained prompts score about -0.7, requests unlike them -7 to -14 (BENCHMARKS.md)


@dataclass
class StageResult:
    stage: Stage
    generation: Generation
    cpu_seconds: float
    abandoned: list[Abandoned] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


@dataclass
class PlanRun:
    """What a plan's execution produced; filled as the stream completes."""

    results: list[StageResult | None]
    concurrent: bool
    first_piece_at: float | None = None
    pieces_at: list[float] = field(default_factory=list)

    @property
    def escalated(self) -> bool:
        return any(r is not None and r.abandoned for r in self.results)

    @property
    def finished(self) -> list[StageResult]:
        """Every stage's result, once the stream has completed (a missing one is a broken invariant)."""
        done = [r for r in self.results if r is not None]
        if len(done) != len(self.results):
            raise Internal(f"{len(self.results) - len(done)} of {len(self.results)} stages have no result")
        return done


class Pipeline:
    """Runs plans on the models of a residency pool."""

    def __init__(self, pool: ResidencyPool, router: RouterConfig = RouterConfig()) -> None:
        self.pool, self.router = pool, router
        self.escalations = 0

    def choices(self, stage: Stage, explicit: bool, deadline: float | None,
                router: RouterConfig | None = None) -> list[str]:
        """The models to try for a stage, in order (`router`: this request's, e.g. a tier's canary version)."""
        router = router or self.router
        if explicit:
            tier = stage.tier
            return [{"small": router.small, "large": router.large}.get(tier, tier)]
        short = deadline is not None and deadline - time.monotonic() < router.large_min_s
        if short:
            return [router.small]
        if stage.tier == AUTO:
            return [router.small, router.large]
        return [{"small": router.small, "large": router.large}.get(stage.tier, stage.tier)]

    async def run(self, plan: Plan, topic: str, deadline: float | None, explicit: bool,
                  state: PlanRun, router: RouterConfig | None = None) -> AsyncIterator[tuple[int, str]]:
        """Yield (stage, text) pieces in stage order while the stages run; `state` receives the results."""
        stages = plan.stages
        firsts = {self.choices(s, explicit, deadline, router)[0] for s in stages}
        for name in firsts:
            self.pool.spec(name)  # unknown models fail before any work starts
        state.concurrent = len(stages) > 1 and self.pool.fits_together(firsts)
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()

        async def one(stage: Stage) -> None:
            try:
                state.results[stage.index] = await self._stage(stage, topic, deadline, explicit, queue, loop, cancelled,
                                                               router)
                queue.put_nowait((stage.index, None))
            except BaseException as exc:
                queue.put_nowait((stage.index, exc))
                raise

        async def in_sequence() -> None:
            # light then heavy: the lighter model runs (and can be evicted) before the heavier one loads
            order = sorted(stages, key=lambda s: (self.pool.spec(self.choices(s, explicit, deadline, router)[0]).bytes,
                                                  s.index))
            for stage in order:
                await one(stage)

        tasks = [asyncio.create_task(one(s)) for s in stages] if state.concurrent else [
            asyncio.create_task(in_sequence())]
        buffers: dict[int, list[str]] = {s.index: [] for s in stages}
        done: set[int] = set()
        current = 0
        try:
            while current < len(stages):
                index, piece = await queue.get()
                if isinstance(piece, BaseException):
                    raise piece
                if piece is None:
                    done.add(index)
                else:
                    buffers[index].append(piece)
                while current < len(stages):  # release whatever is now in order
                    for text in buffers[current]:
                        state.pieces_at.append(time.monotonic())
                        state.first_piece_at = state.first_piece_at or state.pieces_at[-1]
                        yield current, text
                    buffers[current].clear()
                    if current not in done:
                        break
                    current += 1
                    if current < len(stages):
                        yield current, plan.separator
        finally:
            cancelled.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stage(self, stage: Stage, topic: str, deadline: float | None, explicit: bool, queue: asyncio.Queue,
                     loop: asyncio.AbstractEventLoop, cancelled: threading.Event,
                     router: RouterConfig | None = None) -> StageResult:
        prompt = stage.prompt.replace(TOPIC, topic)
        choices = self.choices(stage, explicit, deadline, router)
        abandoned: list[Abandoned] = []

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (stage.index, text))

        def confident(mean_logprob: float) -> bool:
            return mean_logprob >= self.router.threshold

        def knows(prompt_logprob: float) -> bool:
            return prompt_logprob >= self.router.prompt_threshold

        spent: list[float] = []  # CPU seconds of each attempt, abandoned ones included

        def decode(model, last: bool) -> Generation:
            started = time.thread_time()
            try:
                return generate(model, prompt, stage.constraints, emit, deadline, cancelled,
                                probe_tokens=0 if last else self.router.probe_tokens,
                                confident=None if last else confident, knows_prompt=None if last else knows)
            finally:
                spent.append(time.thread_time() - started)

        for i, name in enumerate(choices):
            last = i == len(choices) - 1
            async with self.pool.use(name, deadline) as model:
                try:
                    generation = await _until_thread_ends(asyncio.to_thread(decode, model, last), cancelled)
                except Abandoned as exc:
                    abandoned.append(exc)
                    self.escalations += 1
                    continue
            return StageResult(stage, generation, sum(spent), abandoned, choices[:i + 1])
        raise AssertionError("the last choice never abandons")  # pragma: no cover


async def _until_thread_ends(work, cancelled: threading.Event):
    """Await a decode thread; if this task is cancelled, tell the thread and wait for it to stop (within one
    token), so the model is not released, and perhaps evicted, while the thread still runs on it."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancelled.set()
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # the thread's DeadlineExceeded: expected, retrieved so it is not reported
        raise
