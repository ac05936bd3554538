"""Residency under a memory budget: models load and unload around the stages, and the budget is never exceeded."""

from __future__ import annotations

import asyncio
import time

import pytest

from errors import InvalidArgument, ResourceExhausted
from feedserve.v1 import generator_pb2
from generator import metrics
from generator.corpus import TOPICS as CATEGORIES
from generator.pipeline import Pipeline, PlanRun
from generator.planner import make_plan
from generator.residency import ModelSpec, ResidencyPool
from mesh.metrics import REGISTRY


async def _run_plan(pool: ResidencyPool, prompt: str, max_tokens: int = 40) -> tuple[PlanRun, list[tuple[int, str]]]:
    plan = make_plan(generator_pb2.GenerateRequest(prompt=prompt, max_tokens=max_tokens), CATEGORIES)
    state = PlanRun([None] * len(plan.stages), concurrent=False)
    pieces = [piece async for piece in Pipeline(pool).run(plan, plan.topic, None, False, state)]
    return state, pieces


class TestBudget:
    def test_two_models_larger_than_the_budget_together_still_run_a_two_stage_plan(
            self, specs: dict[str, ModelSpec], run) -> None:
        """Headline (small) and body (large) need both tiers, which do not fit together: the stages run light
        then heavy in sequence, the small tier is evicted for the large, and the budget is never exceeded."""
        small, large = specs["small"].bytes, specs["large"].bytes
        budget = large + small // 2
        assert small + large > budget >= max(small, large)
        pool = ResidencyPool(specs, budget)
        state, pieces = run(_run_plan(pool, "Write a post about music."))
        assert not state.concurrent
        assert [r.generation.model for r in state.results] == ["small", "large"]
        assert all(r.generation.tokens_out > 0 for r in state.results)
        stages = [stage for stage, _ in pieces]
        assert stages == sorted(stages) and stages[-1] == 1  # streamed in stage order
        assert pool.peak <= budget and pool.loads == 2 and pool.evictions == 1
        assert list(pool.resident) == ["large"]

    def test_with_room_for_both_the_stages_run_concurrently(self, specs: dict[str, ModelSpec], run) -> None:
        """A budget that holds both tiers runs the independent stages at once, each on its tier."""
        pool = ResidencyPool(specs, specs["small"].bytes + specs["large"].bytes)
        state, _ = run(_run_plan(pool, "Write a post about travel."))
        assert state.concurrent and pool.evictions == 0
        assert sorted(pool.resident) == ["large", "small"]

    def test_a_model_larger_than_the_whole_budget_is_refused_at_once(self, specs: dict[str, ModelSpec], run) -> None:
        """RESOURCE_EXHAUSTED names the model and the budget; nothing is loaded."""
        pool = ResidencyPool(specs, specs["large"].bytes - 1)

        async def use_large() -> None:
            async with pool.use("large"):
                pass

        with pytest.raises(ResourceExhausted, match="model large needs"):
            run(use_large())
        assert pool.loads == 0 and pool.used == 0

    def test_a_stage_that_finds_no_room_by_its_deadline_gets_resource_exhausted(
            self, specs: dict[str, ModelSpec], run) -> None:
        """While the small tier is busy and the large one cannot fit beside it, a large-tier request waits
        until its deadline and then gets RESOURCE_EXHAUSTED; the busy model is not evicted under its user."""
        pool = ResidencyPool(specs, specs["large"].bytes + specs["small"].bytes // 2)

        async def contend() -> None:
            async with pool.use("small"):
                with pytest.raises(ResourceExhausted, match="no room"):
                    async with pool.use("large", deadline=time.monotonic() + 0.05):
                        pass
                assert list(pool.resident) == ["small"]

        run(contend())

    def test_a_waiting_stage_proceeds_when_the_busy_model_is_released(self, specs: dict[str, ModelSpec], run) -> None:
        """The waiter is woken by the release (no polling), evicts the now idle small tier, and loads."""
        pool = ResidencyPool(specs, specs["large"].bytes + specs["small"].bytes // 2)

        async def contend() -> None:
            holding = asyncio.Event()
            release = asyncio.Event()

            async def hold_small() -> None:
                async with pool.use("small"):
                    holding.set()
                    await release.wait()

            holder = asyncio.create_task(hold_small())
            await holding.wait()
            waiter = asyncio.create_task(_use(pool, "large"))
            await asyncio.sleep(0)  # let the waiter reach its wait
            assert not waiter.done()
            release.set()
            await asyncio.gather(holder, waiter)
            assert list(pool.resident) == ["large"] and pool.peak <= pool.budget

        run(contend())


async def _use(pool: ResidencyPool, name: str) -> None:
    async with pool.use(name):
        pass


class TestKeepAliveAndPinning:
    def test_idle_models_past_keep_alive_are_unloaded_and_pinned_ones_stay(
            self, specs: dict[str, ModelSpec], run) -> None:
        """sweep() unloads an idle model whose keep-alive ran out, but never a pinned one."""
        pool = ResidencyPool(specs, 10 * (specs["small"].bytes + specs["large"].bytes), keep_alive_s=0.0,
                             pinned=("small",))

        async def scenario() -> None:
            await pool.preload()
            await _use(pool, "large")
            await pool.sweep()

        run(scenario())
        assert list(pool.resident) == ["small"]

    def test_pinning_an_unknown_model_is_refused(self, specs: dict[str, ModelSpec]) -> None:
        """Configuration errors surface at start, naming the models."""
        with pytest.raises(ValueError, match="not configured"):
            ResidencyPool(specs, 1 << 30, pinned=("huge",))

    def test_an_unknown_model_is_invalid_argument(self, specs: dict[str, ModelSpec]) -> None:
        """Asking the pool for a model it does not have names the field and the known models."""
        with pytest.raises(InvalidArgument, match="unknown model 'nope'"):
            ResidencyPool(specs, 1 << 30).spec("nope")


class TestMetrics:
    def test_loads_evictions_and_resident_bytes_reach_prometheus(self, specs: dict[str, ModelSpec], run) -> None:
        """With the service's hook, the registry shows each load and eviction and the bytes now resident."""
        pool = ResidencyPool(specs, specs["large"].bytes + specs["small"].bytes // 2, on_change=metrics.observe_pool)
        before = REGISTRY.get_sample_value("feedserve_generator_model_events_total",
                                           {"model": "small", "event": "evict"}) or 0.0

        async def both() -> None:
            await _use(pool, "small")
            await _use(pool, "large")

        run(both())
        assert REGISTRY.get_sample_value("feedserve_generator_resident_bytes") == pool.used == specs["large"].bytes
        assert REGISTRY.get_sample_value("feedserve_generator_model_events_total",
                                         {"model": "small", "event": "evict"}) == before + 1
