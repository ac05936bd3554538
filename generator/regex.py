"""Regular expressions compiled to automata within a bound on their states, and kept in a bounded cache."""

from __future__ import annotations

import threading
from typing import Any

import interegular
import interegular.fsm
from interegular.fsm import FSM, OblivionError

from errors import InvalidArgument
from mesh.lru import LruCache

__all__ = ["MAX_STATES", "compile_pattern"]

# A pattern whose construction visits more automaton states than this (over every intermediate automaton
# interegular builds) is refused: `(a|b)*a(a|b){n}` needs 2^(n+1) states, `((.{999}){999}){999}` a billion.
# Every pattern the product's planner writes needs a few hundred.
MAX_STATES = 20_000
# ... or follows more transitions, each weighed by the parts of the state it leaves (a pattern with many character
# classes has many symbols, and each transition is a pass over the state's parts). Either bound stops a build
# within about half a second here.
MAX_TRANSITIONS = 1_000_000
_COMPILED_KEPT = 256

_budget = threading.local()  # states and transitions the build on this thread may still visit (absent: unbounded)
_compiled: LruCache[str, FSM | InvalidArgument] = LruCache(_COMPILED_KEPT)  # refusals too: a resent one is free
_compiled_lock = threading.Lock()


class _TooManyStates(Exception):
    pass


def _key(state: Any) -> Any:
    """A hashable stand-in that is equal exactly when interegular's states compare equal (it builds sets and
    dicts as states, and compares them with ==)."""
    if isinstance(state, dict):
        return frozenset(state.items())
    if isinstance(state, set):
        return frozenset(state)
    return state


def _crawl(alphabet, initial, final, follow) -> FSM:  # interegular's own signature
    """interegular's `crawl`, with states found by hash rather than a linear search (its list search made a
    2,000-state build take seconds), and counted against this thread's budget."""
    states = [initial]
    index = {_key(initial): 0}
    finals = set()
    moves: dict[int, dict[Any, int]] = {}
    remaining = getattr(_budget, "states", None)
    transitions = getattr(_budget, "transitions", None)
    i = 0
    while i < len(states):
        state = states[i]
        if final(state):
            finals.add(i)
        moves[i] = {}
        if transitions is not None:
            transitions -= len(alphabet.by_transition) * max(1, len(state) if hasattr(state, "__len__") else 1)
            if transitions < 0:
                raise _TooManyStates
        for transition in alphabet.by_transition:
            try:
                after = follow(state, transition)
            except OblivionError:
                continue
            key = _key(after)
            j = index.get(key)
            if j is None:
                if remaining is not None:
                    remaining -= 1
                    if remaining < 0:
                        raise _TooManyStates
                j = index[key] = len(states)
                states.append(after)
            moves[i][transition] = j
        i += 1
    if remaining is not None and transitions is not None:
        _budget.states, _budget.transitions = remaining, transitions
    return FSM(alphabet=alphabet, states=range(len(states)), initial=0, finals=finals, map=moves,
               __no_validation__=True)


interegular.fsm.crawl = _crawl  # every interegular construction (concatenation, union, repetition) calls it by name


def compile_pattern(regex: str, max_states: int = MAX_STATES) -> FSM:
    """The pattern's automaton; INVALID_ARGUMENT naming `pattern` when it cannot be parsed or needs more than
    `max_states` states to build. The `_COMPILED_KEPT` most recent are kept, so a repeated pattern costs a lookup."""
    with _compiled_lock:
        found = _compiled.get(regex)
    if found is None:
        found = _build(regex, max_states)
        with _compiled_lock:
            _compiled.put(regex, found)
    if isinstance(found, InvalidArgument):
        raise found
    return found


def _build(regex: str, max_states: int) -> FSM | InvalidArgument:
    try:
        parsed = interegular.parse_pattern(regex)
    except Exception as exc:  # interegular's parse errors share no base class
        return InvalidArgument("pattern", f"pattern {regex[:200]!r} is not a supported regular expression: {exc}")
    transitions = max_states * MAX_TRANSITIONS // MAX_STATES
    _budget.states, _budget.transitions = max_states, transitions
    try:
        return parsed.to_fsm()
    except _TooManyStates:
        return InvalidArgument("pattern", f"pattern {regex[:80]!r} needs more than the bound of {max_states} "
                                          f"automaton states (or {transitions} transitions) to build")
    except Exception as exc:  # NotImplementedError for lookarounds, Unsupported for flags
        return InvalidArgument("pattern", f"pattern {regex[:200]!r} is not a supported regular expression: {exc}")
    finally:
        del _budget.states, _budget.transitions
