"""Patterns compile to automata within a bound on their states: hostile ones are refused by name, kept ones match."""

from __future__ import annotations

import re

import pytest

from errors import InvalidArgument
from generator.regex import MAX_STATES, compile_pattern


def _accepts(fsm, text: str) -> bool:
    state = fsm.initial
    for char in text:
        state = fsm.map.get(state, {}).get(fsm.alphabet[char])
        if state is None:
            return False
    return state in fsm.finals


@pytest.mark.parametrize("regex", [
    "(a|b)*a(a|b){24}",  # a DFA of 2^25 states
    "((.{999}){999}){999}",  # a billion
    "(x{999}){999}",
    "(" + "|".join("abcdefghijklmnopqrstuvwxyz0123456789") + ")*a(.){13}",  # many symbols per state
])
def test_a_pattern_past_the_bound_is_refused_naming_pattern_and_the_bound(regex: str) -> None:
    """INVALID_ARGUMENT naming `pattern` and the bound, raised while the automaton is built (interegular's own
    build of the first takes minutes and of the second never ends)."""
    with pytest.raises(InvalidArgument) as caught:
        compile_pattern(regex)
    assert caught.value.field == "pattern"
    assert str(MAX_STATES) in str(caught.value)


def test_a_refusal_is_remembered_so_a_resent_pattern_costs_a_lookup() -> None:
    """The same hostile pattern twice raises the very same refusal: the second build never runs."""
    regex = "(a|b)*a(a|b){22}"
    with pytest.raises(InvalidArgument) as first:
        compile_pattern(regex)
    with pytest.raises(InvalidArgument) as second:
        compile_pattern(regex)
    assert first.value is second.value


def test_a_pattern_within_the_bound_builds_the_automaton_re_agrees_with() -> None:
    """The bounded build (states found by hash, not interegular's list search) accepts exactly what Python's
    re.fullmatch accepts, on a pattern near the bound and on everyday ones."""
    cases = {
        "(a|b)*a(a|b){10}": ["a" * 11, "b" + "a" * 11, "ab" * 6, "b" * 11 + "a", "abababababba", ""],
        r"\d{3}-\d{4}": ["555-1234", "55-1234", "555-12345", "abc-defg"],
        "[A-Z][a-z]+ (is|was) [0-9]+": ["Anna is 7", "Bob was 12", "bob was 12", "Anna is"],
        "(.{3}){2,3}": ["abcdef", "abcdefghi", "abcd", "abcdefghij"],
    }
    for regex, texts in cases.items():
        fsm = compile_pattern(regex)
        for text in texts:
            assert _accepts(fsm, text) == bool(re.fullmatch(regex, text)), (regex, text)
    assert len(compile_pattern("(a|b)*a(a|b){12}").states) == 2 ** 13 + 1  # near the bound, still built


def test_an_unparsable_pattern_is_refused_naming_pattern() -> None:
    """A syntax error is INVALID_ARGUMENT on `pattern`, like the bound."""
    with pytest.raises(InvalidArgument) as caught:
        compile_pattern("(unclosed")
    assert caught.value.field == "pattern"
