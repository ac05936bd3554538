"""Constraints hold in every output, because decoding only ever picks tokens that keep them."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from errors import InvalidArgument
from generator.constraints import WORD, Constraints
from generator.decoding import LanguageModel, generate

_WORDS = ["the", "of", "music", "a", "is", "guide", "best", "part", "and", "travel", "food", "ideas", "story"]
_PATTERNS = [r"[A-Z][a-z]+( [a-z]+){1,4}\.", r"\d{3}-\d{4}", r'\{"topic": "[a-z]+"\}', r"(yes|no)", r"[a-z ]{5,20}"]


def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


@st.composite
def _constraints(draw: st.DrawFn) -> Constraints:
    max_tokens = draw(st.integers(1, 40))
    pattern = draw(st.sampled_from(["", *_PATTERNS]))
    allowed = None
    if not pattern and draw(st.booleans()):
        allowed = frozenset(draw(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=6)))
    banned = frozenset(draw(st.lists(st.sampled_from(_WORDS), max_size=4))) - (allowed or frozenset())
    if pattern and max_tokens < 24:  # a pattern needs room for its shortest match
        max_tokens = 24
    return Constraints(max_tokens=max_tokens, stop=tuple(draw(st.lists(st.sampled_from(["\n\n", ".", " is"]),
                                                                       max_size=2))),
                       banned_words=banned, allowed_words=allowed, pattern=pattern,
                       max_words=draw(st.sampled_from([0, 1, 3, 10])))


class TestConstraintsHold:
    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(prompt=st.text(min_size=1, max_size=60).filter(lambda s: s.strip()), constraints=_constraints())
    def test_every_output_satisfies_every_constraint(self, small: LanguageModel, prompt: str,
                                                     constraints: Constraints) -> None:
        """Over random prompts and constraint sets: token limit, stops, banned and allowed words, word limit and
        pattern all hold in the output, and the streamed pieces add up to it exactly."""
        pieces: list[str] = []
        try:
            out = generate(small, prompt, constraints, pieces.append)
        except InvalidArgument as exc:
            assert exc.field in ("constraints", "max_tokens")  # an impossible combination is refused, never violated
            return
        assert "".join(pieces) == out.text
        assert out.tokens_out <= constraints.max_tokens
        assert not any(s in out.text for s in constraints.stop)
        words = _words(out.text)
        assert not set(words) & {w.lower() for w in constraints.banned_words}
        if constraints.allowed_words is not None:
            assert set(words) <= constraints.allowed_words
        if constraints.max_words:
            assert len(words) <= constraints.max_words
        if constraints.pattern:
            assert re.fullmatch(constraints.pattern, out.text), (constraints.pattern, out.text)


class TestStreaming:
    def test_a_stop_sequence_is_held_back_not_streamed_then_retracted(self, small: LanguageModel) -> None:
        """Text that could begin a stop sequence is only streamed once it cannot: no piece ever shows the stop."""
        pieces: list[str] = []
        out = generate(small, "Write a post about music.\n", Constraints(60, stop=(" the",)), pieces.append)
        assert "".join(pieces) == out.text and " the" not in "".join(pieces)


class TestBadConstraints:
    def test_prompt_and_budget_beyond_the_context_are_refused(self, small: LanguageModel) -> None:
        """A prompt plus max_tokens longer than the model's context is INVALID_ARGUMENT on max_tokens."""
        with pytest.raises(InvalidArgument) as caught:
            generate(small, "music " * 200, Constraints(max_tokens=200), lambda _: None)
        assert caught.value.field == "max_tokens"

    def test_an_unparseable_pattern_names_the_field(self, small: LanguageModel) -> None:
        """A pattern the automaton builder cannot read is INVALID_ARGUMENT on pattern."""
        with pytest.raises(InvalidArgument) as caught:
            generate(small, "hi", Constraints(max_tokens=5, pattern="(a"), lambda _: None)
        assert caught.value.field == "pattern"


class TestPatternTables:
    @pytest.mark.parametrize("regex", [r'\{"name": "[A-Za-z ]{1,20}", "age": [0-9]{1,3}\}',
                                       r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r"[a-z]+( [a-z]+){2,5}", r".{0,12}\.", r"(\s|[A-Z])+"])
    def test_walking_tokens_one_by_one_and_all_at_once_give_the_same_tables(
            self, small: LanguageModel, regex: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """A state's next-state and distance for every token are the same whether the state walks each token's
        text (narrow states) or the whole vocabulary at once in numpy (broad states)."""
        from generator import constraints

        monkeypatch.setattr(constraints, "_WALK_TOKENS", 1 << 30)
        by_token = constraints.Pattern(regex, small.vocabulary)
        monkeypatch.setattr(constraints, "_WALK_TOKENS", 0)
        at_once = constraints.Pattern(regex, small.vocabulary)
        for state in by_token.fsm.map:
            (targets_a, distances_a), (targets_b, distances_b) = by_token.moves(state), at_once.moves(state)
            assert (targets_a == targets_b).all() and (distances_a == distances_b).all()
