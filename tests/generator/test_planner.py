"""The planner: one read of the request lays out every stage, its tier, budget and constraints."""

from __future__ import annotations

from feedserve.v1 import generator_pb2
from generator.corpus import STAGE_END
from generator.corpus import TOPICS as CATEGORIES
from generator.planner import AUTO, TOPIC, make_plan


def _plan(prompt: str, **fields):
    return make_plan(generator_pb2.GenerateRequest(prompt=prompt, **{"max_tokens": 120, **fields}), CATEGORIES)


class TestPlans:
    def test_a_post_is_a_light_headline_and_a_heavy_body_within_the_word_limit(self) -> None:
        """"a post ... at most 60 words": headline on small, body on large, the word budgets summing to 60 and
        the token budgets to max_tokens; both stages carry the banned words and stop at the stage end."""
        plan = _plan("Write a post about music, at most 60 words.", banned_words=["boring"])
        head, body = plan.stages
        assert (plan.kind, plan.topic, head.tier, body.tier) == ("post", "music", "small", "large")
        assert head.constraints.max_words + body.constraints.max_words == 60
        assert head.constraints.max_tokens + body.constraints.max_tokens == 120
        assert all(s.constraints.banned_words == {"boring"} and STAGE_END in s.constraints.stop for s in plan.stages)
        assert all(TOPIC in s.prompt for s in plan.stages)

    def test_their_top_interest_needs_the_user_vector_first(self) -> None:
        """With a user and "their top interest", the plan asks for evidence before its stages."""
        plan = _plan("A post for user 42 about their top interest, at most 60 words", user_id=42)
        assert plan.needs_user_topic and plan.kind == "post"
        assert not _plan("A post about their top interest").needs_user_topic  # no user to ask about

    def test_a_pattern_makes_one_stage_with_the_pattern(self) -> None:
        """A pattern shapes one text, so the whole request is one routed stage."""
        plan = _plan("Write a post about music.", pattern="[a-z ]+")
        (stage,) = plan.stages
        assert stage.tier == AUTO and stage.constraints.pattern == "[a-z ]+"

    def test_an_explicit_model_is_every_stages_tier(self) -> None:
        """A named model replaces the planner's choice on every stage."""
        assert {s.tier for s in _plan("Write a post about food.", model="small").stages} == {"small"}

    def test_an_unknown_topic_is_answered_as_written(self) -> None:
        """A post about something the tiers never saw is one AUTO stage on the prompt itself."""
        plan = _plan("Write a post about quantum chromodynamics.")
        assert plan.kind == "answer" and plan.stages[0].prompt.startswith("Write a post about quantum")
