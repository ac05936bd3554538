"""SmolLM2 as the real tier: constraints hold on its 49k-token vocabulary, item teasers come from the catalog and the
user's interests through the paramserver, and a budget below both tiers' sum still completes a two-stage plan."""

from __future__ import annotations

import json
import re

import grpc
import pytest

from feedserve.v1 import common_pb2, generator_pb2
from generator.constraints import WORD, Constraints
from generator.corpus import TOPICS
from generator.decoding import generate
from generator.pipeline import Pipeline, PlanRun
from generator.planner import make_plan
from generator.residency import ResidencyPool
from tests.stack import generation_stack


def _write(model, prompt: str, **limits) -> str:
    return generate(model, prompt, Constraints(**{"max_tokens": 40, **limits}), lambda _: None).text


class TestConstraintsOnTheRealVocabulary:
    def test_a_stop_sequence_ends_the_text_before_it(self, smollm2) -> None:
        """The answer is cut at the first stop sequence, which never appears."""
        text = _write(smollm2, "List three fruits, separated by commas.", stop=(",",))
        assert text and "," not in text

    def test_banned_words_never_appear(self, smollm2) -> None:
        """The words the model would reach for first are banned; it writes around them."""
        text = _write(smollm2, "What is the capital of France? Answer in one sentence.",
                      banned_words=frozenset({"paris", "capital"}))
        words = {w.lower() for w in WORD.findall(text)}
        assert text and not words & {"paris", "capital"}

    def test_a_word_limit_ends_the_text_at_the_limit(self, smollm2) -> None:
        """At most 12 words, and the text ends at a word boundary rather than in forced punctuation."""
        text = _write(smollm2, "Describe a walk in the mountains.", max_words=12)
        assert 1 <= len(WORD.findall(text)) <= 12
        assert not re.search(r"[#*_]{2,}", text)

    def test_a_regular_expression_shapes_the_whole_answer(self, smollm2) -> None:
        """A date pattern: the text is a full match."""
        text = _write(smollm2, "When did the first person walk on the Moon? Give the date.",
                      pattern=r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
        assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text)

    def test_a_json_shape_comes_out_as_valid_json(self, smollm2) -> None:
        """A JSON object pattern with a string and a number: the output parses and has both fields."""
        shape = r'\{"name": "[A-Za-z ]{1,20}", "age": [0-9]{1,3}\}'
        text = _write(smollm2, "Give a JSON object with a person's name and age.", pattern=shape, max_tokens=30)
        parsed = json.loads(text)
        assert set(parsed) == {"name", "age"} and isinstance(parsed["age"], int)

    def test_allowed_words_bound_every_word(self, smollm2) -> None:
        """Only the allowed words (punctuation and spaces free)."""
        allowed = frozenset({"the", "sea", "is", "blue", "and", "calm", "deep", "very"})
        text = _write(smollm2, "Describe the sea in a few words.", allowed_words=allowed, max_tokens=12)
        assert text and {w.lower() for w in WORD.findall(text)} <= allowed


class TestBudget:
    def test_a_budget_below_both_tiers_still_completes_a_two_stage_plan_and_never_goes_over(
            self, real_specs, run) -> None:
        """Room for the larger tier but not both: the post's headline (small) and body (SmolLM2) run light then
        heavy, the small one evicted for the large one, and the pool's measured bytes never pass the budget."""
        small, large = real_specs["small"].bytes, real_specs["large"].bytes
        budget = large + small // 2
        assert budget < small + large
        pool = ResidencyPool(real_specs, budget)
        plan = make_plan(generator_pb2.GenerateRequest(prompt="Write a post about music, at most 40 words",
                                                       max_tokens=60), TOPICS)
        state = PlanRun([None] * len(plan.stages), concurrent=False)

        async def body() -> str:
            return "".join([piece async for _, piece in Pipeline(pool).run(plan, plan.topic, None, False, state)])

        text = run(body())
        assert not state.concurrent
        assert [r.generation.model for r in state.finished] == ["small", "large"]
        assert all(r.generation.text for r in state.finished) and text
        assert pool.peak <= budget and pool.evictions >= 1


class TestTeasers:
    def test_each_item_gets_a_teaser_in_its_own_stage_for_the_users_interests(
            self, real_home, real_specs, catalog, tmp_path, run) -> None:
        """Two items of the catalog, for a user with a vector: one teaser each, streamed under the item's index,
        by SmolLM2, within the word limit; the plan read the user's interests from the paramserver."""
        user = int(catalog.user_ids[0])

        async def body() -> None:
            async with generation_stack(real_home, catalog, tmp_path, real_specs) as stack:
                request = generator_pb2.GenerateRequest(
                    prompt="Teasers for the feed, at most 20 words", max_tokens=40, user_id=user, item_ids=[1, 2],
                    context=common_pb2.RequestContext(tenant="t", feature_tag="teasers"))
                texts: dict[int, str] = {}
                final = None
                async for chunk in stack.gateway.Generate(request, timeout=120):
                    if chunk.final:
                        final = chunk
                    else:
                        texts[chunk.stage] = texts.get(chunk.stage, "") + chunk.text
                assert final is not None and "large" in final.usage.models
                teasers = [texts.get(0, "").strip(), texts.get(1, "").strip()]
                assert all(teasers) and all(len(WORD.findall(t)) <= 20 for t in teasers)
                assert any(h.service == "generator" and h.stage == "evidence" for h in final.hops)

        run(body())

    def test_unknown_item_ids_are_refused_naming_them(self, real_home, real_specs, catalog, tmp_path, run) -> None:
        """Ids the catalog does not hold: INVALID_ARGUMENT naming them, before any generation."""
        async def body() -> None:
            async with generation_stack(real_home, catalog, tmp_path, real_specs) as stack:
                request = generator_pb2.GenerateRequest(prompt="Teasers", max_tokens=20, item_ids=[1, 987654321])
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in stack.gateway.Generate(request, timeout=60):
                        pass
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "item_ids" in caught.value.details() and "987654321" in caught.value.details()
                assert stack.generator.pool.loads == 0

        run(body())


class TestRepetition:
    def test_the_real_tier_does_not_loop_on_a_phrase(self, smollm2) -> None:
        """With the instruction models' repetition penalty, a 60-word post never repeats a four-word run three
        times (greedy SmolLM2-135M without it wrote "The Best of 2023:" over and over)."""
        assert smollm2.repetition_penalty > 1.0
        text = _write(smollm2, "Write a post for me about my top interest, music, at most 60 words", max_tokens=90,
                      max_words=60, stop=("\n\n",))
        words = [w.lower() for w in WORD.findall(text)]
        runs = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        assert len(words) >= 10 and max(runs.count(r) for r in runs) < 3
