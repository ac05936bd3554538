"""Tiered routing: the small tier answers first and escalates below the confidence threshold; short deadlines
keep planner-chosen stages on the small tier."""

from __future__ import annotations

import time

import pytest

from errors import DeadlineExceeded
from feedserve.v1 import generator_pb2
from generator.constraints import Constraints
from generator.corpus import TOPICS as CATEGORIES
from generator.decoding import generate
from generator.pipeline import Pipeline, PlanRun, RouterConfig
from generator.planner import make_plan
from generator.residency import ModelSpec, ResidencyPool


async def _answer(pipeline: Pipeline, prompt: str, model: str = "", deadline: float | None = None):
    plan = make_plan(generator_pb2.GenerateRequest(prompt=prompt, max_tokens=24, model=model), CATEGORIES)
    state = PlanRun([None] * len(plan.stages), concurrent=False)
    text = "".join([piece async for _, piece in pipeline.run(plan, plan.topic, deadline, bool(model), state)])
    return state, text


def _pool(specs: dict[str, ModelSpec]) -> ResidencyPool:
    return ResidencyPool(specs, 64 << 20)


class TestEscalation:
    def test_below_the_threshold_the_large_tier_answers(self, specs: dict[str, ModelSpec], run) -> None:
        """With a threshold no answer can reach (log-probabilities are ≤ 0), the small tier's probe is
        abandoned unseen: the large tier's text is what streams, and the escalation is counted."""
        pipeline = Pipeline(_pool(specs), RouterConfig(threshold=0.5, probe_tokens=4, prompt_threshold=-1e9))
        state, text = run(_answer(pipeline, "What is the capital of France?"))
        (result,) = state.results
        assert state.escalated and pipeline.escalations == 1
        assert result.models == ["small", "large"] and result.generation.model == "large"
        assert text == result.generation.text  # nothing of the abandoned probe reached the stream
        assert result.abandoned[0].tokens_out > 0  # its tokens are still accounted

    def test_above_the_threshold_the_small_tier_keeps_the_request(self, specs: dict[str, ModelSpec], run) -> None:
        """A threshold every answer clears: the small tier answers alone, nothing escalates."""
        pipeline = Pipeline(_pool(specs), RouterConfig(threshold=-1e9, prompt_threshold=-1e9))
        state, _ = run(_answer(pipeline, "What is the capital of France?"))
        assert not state.escalated and state.results[0].generation.model == "small"
        assert pipeline.escalations == 0

    def test_the_escalation_is_decided_on_the_measured_confidence(self, specs: dict[str, ModelSpec], run) -> None:
        """Thresholds just above and just below the probe's own mean log-probability flip the decision."""
        probe = Pipeline(_pool(specs), RouterConfig(threshold=0.5, probe_tokens=4, prompt_threshold=-1e9))
        state, _ = run(_answer(probe, "Tell me something about poetry."))
        measured = state.results[0].abandoned[0].mean_logprob
        above = Pipeline(_pool(specs), RouterConfig(threshold=measured - 1e-6, probe_tokens=4, prompt_threshold=-1e9))
        below = Pipeline(_pool(specs), RouterConfig(threshold=measured + 1e-6, probe_tokens=4, prompt_threshold=-1e9))
        assert not run(_answer(above, "Tell me something about poetry."))[0].escalated
        assert run(_answer(below, "Tell me something about poetry."))[0].escalated


class TestPromptFit:
    def test_a_request_unlike_the_small_tiers_training_goes_to_the_large_tier_before_any_token(
            self, specs: dict[str, ModelSpec], run) -> None:
        """The small tier's surprise at the prompt itself decides first: a question it never saw the like of is
        abandoned with no token decoded (it would answer it confidently and wrongly), and the large tier answers."""
        pipeline = Pipeline(_pool(specs), RouterConfig(threshold=-1e9))
        state, text = run(_answer(pipeline, "What should I pack for a beach holiday?"))
        (result,) = state.results
        assert result.models == ["small", "large"] and result.generation.model == "large"
        assert result.abandoned[0].tokens_out == 0 and "of the prompt" in str(result.abandoned[0])
        assert result.abandoned[0].mean_logprob < RouterConfig.prompt_threshold

    def test_a_request_like_the_small_tiers_training_stays_on_the_small_tier(
            self, specs: dict[str, ModelSpec], run) -> None:
        """A prompt of the kind the small tier was trained on scores well above the prompt threshold: it answers."""
        pipeline = Pipeline(_pool(specs), RouterConfig(threshold=-1e9))
        state, _ = run(_answer(pipeline, "List ideas about music."))
        assert not state.escalated and state.results[0].generation.model == "small"


class TestDeadlines:
    def test_a_passed_deadline_stops_decoding_with_deadline_exceeded(self, small) -> None:
        """Decoding checks the deadline every token: a passed one ends it with DEADLINE_EXCEEDED, not a hang."""
        with pytest.raises(DeadlineExceeded):
            generate(small, "Write a post about music.\n", Constraints(max_tokens=50), lambda _: None,
                     deadline=time.monotonic() - 1)

    def test_a_short_deadline_keeps_every_stage_on_the_small_tier(self, specs: dict[str, ModelSpec], run) -> None:
        """A post normally writes its body on the large tier; with less time left than large_min_s it does
        not, and an AUTO stage does not escalate either."""
        pipeline = Pipeline(_pool(specs), RouterConfig(threshold=0.5, large_min_s=30.0))
        state, _ = run(_answer(pipeline, "Write a post about music.", deadline=time.monotonic() + 10))
        assert [r.generation.model for r in state.results] == ["small", "small"]
        state, _ = run(_answer(pipeline, "What is the capital of France?", deadline=time.monotonic() + 10))
        assert not state.escalated

    def test_an_explicit_model_is_kept_even_with_a_short_deadline(self, specs: dict[str, ModelSpec], run) -> None:
        """The caller's named tier wins over the router."""
        pipeline = Pipeline(_pool(specs), RouterConfig(large_min_s=30.0))
        state, _ = run(_answer(pipeline, "Write a post about music.", model="large",
                               deadline=time.monotonic() + 10))
        assert [r.generation.model for r in state.results] == ["large", "large"]
