"""Constraints enforced while decoding: which next tokens keep the output within its limits, stops and shapes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from errors import InvalidArgument
from generator.regex import compile_pattern
from mesh.lru import LruCache

__all__ = ["Constraints", "Vocabulary", "Pattern", "Guide", "WORD"]

WORD = re.compile(r"\w+")
_INFINITY = 1 << 30
_SHORTLIST = 64  # candidates sorted first when the most likely token is refused
_WALK_TOKENS = 2048  # a pattern state that fewer tokens can leave walks their texts; more, the whole vocabulary in numpy


@dataclass(frozen=True)
class Constraints:
    """What one stage's output must satisfy. Words compare case-insensitively; 0 max_words is no limit."""

    max_tokens: int
    stop: tuple[str, ...] = ()
    banned_words: frozenset[str] = frozenset()
    allowed_words: frozenset[str] | None = None
    pattern: str = ""
    max_words: int = 0


class Vocabulary:
    """Each token id's text; None for a token that is only part of a UTF-8 character (never chosen under a
    text constraint, since no constraint can judge half a character)."""

    def __init__(self, tokenizer) -> None:
        size = tokenizer.get_vocab_size()
        # special tokens (GPT-2's <|endoftext|>) end a generation; they are never text
        self.end_ids = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        self.texts: list[str | None] = []
        for token in range(size):
            text = tokenizer.decode([token], skip_special_tokens=False)
            self.texts.append(None if "\ufffd" in text or token in self.end_ids else text)
        self.size = size
        # token ids by their text's first character: a pattern's state walks only the tokens whose first character
        # it can take (a digit state looks at a handful of tokens, not 49,152)
        firsts: dict[str, list[int]] = {}
        for token, piece in enumerate(self.texts):
            if piece:
                firsts.setdefault(piece[0], []).append(token)
        self.by_first = {char: np.asarray(ids, np.int64) for char, ids in firsts.items()}
        self.chars = sorted({char for piece in self.texts if piece for char in piece})
        # every token's characters as indices into `chars`, -1 past its end (and for tokens with no text); by
        # column, so a pattern walks position by position over contiguous memory (49k x 81 int16: 8 MB for SmolLM2)
        index = {char: i for i, char in enumerate(self.chars)}
        self.char_ids = np.full((size, max((len(p) for p in self.texts if p), default=1)), -1, np.int16, order="F")
        for token, piece in enumerate(self.texts):
            if piece:
                self.char_ids[token, :len(piece)] = [index[char] for char in piece]
        self._within: LruCache[frozenset[str], np.ndarray] = LruCache(64)

    def within(self, allowed: frozenset[str]) -> np.ndarray:
        """Ids of the tokens each of whose words is part of some allowed word (lower case): no other token can
        ever be accepted under `allowed`. Kept for the 64 most recent word sets."""
        found = self._within.get(allowed)
        if found is None:
            joined = "\x00".join(allowed)  # a token's word must be a substring of one allowed word
            found = np.asarray([token for token, piece in enumerate(self.texts) if piece is not None and all(
                word in joined for word in WORD.findall(piece.lower()))], np.int64)
            self._within.put(allowed, found)
        return found


@dataclass(frozen=True)
class _Automaton:
    """A pattern's automaton as arrays, for its broad states: the symbol of each vocabulary character, the
    transition table [states + 1, symbols] (-1: no move; the last row is the dead state), state -> row, and per row
    its state and distance (-1 and infinite when no completion is reachable)."""

    char_symbol: np.ndarray
    table: np.ndarray
    rows: dict[int, int]
    row_state: np.ndarray
    row_distance: np.ndarray


class Pattern:
    """A regular expression as a finite automaton: the state after each token, and how many characters the
    shortest completion from each state needs (so a token is allowed only if the budget can still finish)."""

    def __init__(self, regex: str, vocabulary: Vocabulary) -> None:
        self.fsm = compile_pattern(regex)  # INVALID_ARGUMENT naming `pattern` past the bound on states
        self.vocabulary = vocabulary
        self.distance = self._distances()
        if self.distance.get(self.fsm.initial, _INFINITY) >= _INFINITY:
            raise InvalidArgument("pattern", f"pattern {regex!r} matches nothing")
        self._per_state: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._symbol = {char: self.fsm.alphabet[char] for char in vocabulary.chars}
        self._automaton: _Automaton | None = None

    def _arrays(self) -> _Automaton:
        """The automaton as arrays, built on the first state that many tokens leave (a millisecond or two)."""
        if self._automaton is None:
            char_symbol = np.asarray([self._symbol[char] for char in self.vocabulary.chars], np.int64)
            rows = {int(s): i for i, s in enumerate(sorted(int(s) for s in self.fsm.states))}
            symbols_count = max([int(k) for moves in self.fsm.map.values() for k in moves] + [int(char_symbol.max(initial=0))]) + 1
            table = np.full((len(rows) + 1, symbols_count), -1, np.int64)
            for state, moves in self.fsm.map.items():
                for key, target in moves.items():
                    table[rows[int(state)], int(key)] = rows[int(target)]
            row_distance = np.full(len(rows) + 1, _INFINITY, np.int64)
            row_state = np.full(len(rows) + 1, -1, np.int64)
            for number, row in rows.items():
                if number in self.distance:
                    row_distance[row], row_state[row] = self.distance[number], number
            self._automaton = _Automaton(char_symbol, table, rows, row_state, row_distance)
        return self._automaton

    def _distances(self) -> dict[int, int]:
        reverse: dict[int, set[int]] = {}
        for state, moves in self.fsm.map.items():
            for target in moves.values():
                reverse.setdefault(int(target), set()).add(int(state))
        distance: dict[int, int] = {int(state): 0 for state in self.fsm.finals}
        frontier: list[int] = [int(state) for state in self.fsm.finals]
        while frontier:
            nxt: list[int] = []
            for current in frontier:
                for before in reverse.get(current, ()):
                    if before not in distance:
                        distance[before] = distance[current] + 1
                        nxt.append(before)
            frontier = nxt
        return distance

    def walk(self, state: int, text: str) -> int | None:
        for char in text:
            symbol = self.fsm.alphabet[char]
            after = self.fsm.map.get(state, {}).get(symbol)  # type: ignore[call-overload]  # interegular's State is an int
            if after is None:
                return None
            state = int(after)
        return state

    def moves(self, state: int) -> tuple[np.ndarray, np.ndarray]:
        """For every token: the state after it (-1 if it leaves the language) and that state's distance."""
        if state not in self._per_state:
            leaving = self.fsm.map.get(state, {})  # type: ignore[call-overload]  # interegular's State is an int
            starts = [tokens for char, tokens in self.vocabulary.by_first.items() if self._symbol[char] in leaving]
            if sum(len(tokens) for tokens in starts) <= _WALK_TOKENS:  # a narrow state: walk its few tokens
                targets = np.full(self.vocabulary.size, -1, np.int64)
                distances = np.full(self.vocabulary.size, _INFINITY, np.int64)
                texts = self.vocabulary.texts
                for tokens in starts:
                    for token in tokens.tolist():
                        target = self.walk(state, texts[token] or "")
                        if target is not None and target in self.distance:
                            targets[token], distances[token] = target, self.distance[target]
                self._per_state[state] = (targets, distances)
            else:  # a broad one: every token at once, one character position at a time, over the tokens still moving
                automaton = self._arrays()
                char_ids = self.vocabulary.char_ids
                dead = len(automaton.rows)
                at = np.where(char_ids[:, 0] >= 0, automaton.rows[int(state)], dead)
                moving = np.flatnonzero(char_ids[:, 0] >= 0)
                for position in range(char_ids.shape[1]):
                    chars = char_ids[:, position][moving]
                    going = chars >= 0  # the rest have ended where they are
                    moving, chars = moving[going], chars[going]
                    if not len(moving):
                        break
                    moved = automaton.table[at[moving], automaton.char_symbol[chars]]
                    at[moving] = np.where(moved >= 0, moved, dead)
                    moving = moving[moved >= 0]
                self._per_state[state] = (automaton.row_state[at], automaton.row_distance[at])
        return self._per_state[state]

    def complete(self, state: int) -> bool:
        return state in self.fsm.finals


class Guide:
    """The output so far, and the rule for which token may come next. Every prefix it accepts satisfies the
    word rules with its last word taken as finished, and leaves enough tokens to complete the pattern and the
    last allowed word, so whatever point decoding stops at, the output holds every constraint."""

    def __init__(self, constraints: Constraints, vocabulary: Vocabulary, pattern: Pattern | None = None) -> None:
        self.c, self.vocabulary = constraints, vocabulary
        self.pattern = pattern if pattern is not None else (
            Pattern(constraints.pattern, vocabulary) if constraints.pattern else None)
        self.state: int = int(self.pattern.fsm.initial) if self.pattern else 0
        self.text = ""
        self.banned = {w.lower() for w in constraints.banned_words}
        self.allowed = {w.lower() for w in constraints.allowed_words} if constraints.allowed_words is not None else None
        self.finished = False
        self._text_rules = bool(self.banned or self.allowed is not None or constraints.max_words or constraints.stop)
        # words before `_tail` are settled (checked, and no later token can change them): each candidate is
        # checked on the tail only, not the whole text again
        self._tail, self._settled = 0, 0

    def candidates(self, logprobs: np.ndarray, remaining: int) -> Iterator[int]:
        """Token ids in order of preference, with the pattern's impossible tokens already removed. The most
        likely comes first without sorting the vocabulary; the sort is paid only if it is rejected."""
        ids: np.ndarray | None = None
        if self.pattern is not None:
            targets, distances = self.pattern.moves(self.state)
            ids = np.flatnonzero((targets >= 0) & (distances <= remaining))
        if self.allowed is not None:  # only tokens made of parts of allowed words can pass
            within = self.vocabulary.within(frozenset(self.allowed))
            ids = within if ids is None else np.intersect1d(ids, within, assume_unique=True)
        if ids is not None and not len(ids):
            return
        scores = logprobs if ids is None else logprobs[ids]
        best = int(np.argmax(scores))
        yield best if ids is None else int(ids[best])
        # then the next most likely: a partial sort of the top few first (a whole 49k-token sort costs ~3 ms),
        # the rest only if every one of those is refused too
        first = min(_SHORTLIST, len(scores))
        top = np.argpartition(-scores, first - 1)[:first]
        top = top[np.argsort(-scores[top], kind="stable")]
        for index in top:
            if index != best:
                yield int(index) if ids is None else int(ids[index])
        if first < len(scores):
            seen = set(top.tolist())
            for index in np.argsort(-scores, kind="stable"):
                if int(index) not in seen:
                    yield int(index) if ids is None else int(ids[index])

    def accept(self, token: int, remaining: int) -> str | None:
        """Append `token` if every rule allows it; returns the new text, or None (rejected). `remaining` is
        the number of tokens still allowed after this one. Sets `finished` when a stop sequence ends it."""
        piece = self.vocabulary.texts[token]
        if piece is None or (piece == "" and self._text_rules):
            return None
        text = self.text + piece
        state: int | None = self.state
        if self.pattern is not None:
            state = self.pattern.walk(self.state, piece)
            if state is None:
                return None
        cut = self._stop_at(text)
        if cut is not None:  # a stop sequence: the output ends before it, and must be complete there
            text = text[:cut]
            state = self.pattern.walk(int(self.pattern.fsm.initial), text) if self.pattern else state
            if not self._words_ok(text, remaining=0) or (self.pattern and (state is None or not self.pattern.complete(state))):
                return None
            if state is None:  # no pattern walked it to nothing (checked above); keeps the type exact
                return None
            self._settle(text)
            self.text, self.state, self.finished = text, state, True
            return text
        if not self._words_ok(text, remaining):
            return None
        if state is None:
            return None
        self._settle(text)
        self.text, self.state = text, state
        return text

    def _stop_at(self, text: str) -> int | None:
        cuts = [i for i in (text.find(s) for s in self.c.stop if s) if i >= 0]
        return min(cuts) if cuts else None

    def _tail_of(self, text: str) -> tuple[int, int]:
        """Where the unsettled tail of `text` starts, and how many words come before it."""
        if len(text) < self._tail:  # a stop sequence cut into the settled part: count afresh
            return 0, 0
        return self._tail, self._settled

    def _settle(self, text: str) -> None:
        """Advance the settled mark to the start of the last word (which may still grow)."""
        start, settled = self._tail_of(text)
        matches = list(WORD.finditer(text, start))
        if matches and matches[-1].end() == len(text):
            self._tail, self._settled = matches[-1].start(), settled + len(matches) - 1
        else:
            self._tail, self._settled = len(text), settled + len(matches)

    def _words_ok(self, text: str, remaining: int) -> bool:
        if not (self.banned or self.allowed is not None or self.c.max_words):
            return True
        start, settled = self._tail_of(text)
        words = [w.lower() for w in WORD.findall(text, start)]  # the settled words passed every check already
        if self.c.max_words and settled + len(words) > self.c.max_words:
            return False
        if self.banned and any(w in self.banned for w in words):
            return False
        if self.allowed is not None and words:
            *done, last = words
            if any(w not in self.allowed for w in done):
                return False
            open_word = bool(WORD.match(text[-1:]))  # the last word may still grow
            if last not in self.allowed:
                needed = min((len(w) - len(last) for w in self.allowed if w.startswith(last)), default=_INFINITY)
                if not open_word or needed > remaining:
                    return False
        return True

    def complete(self) -> bool:
        """Whether stopping now leaves an output that holds every constraint."""
        if self.pattern is not None and not self.pattern.complete(self.state):
            return False
        return self._words_ok(self.text, remaining=0)

    def at_word_limit(self) -> bool:
        """Whether the text holds max_words words already (the last may still grow, but no new one may start)."""
        if not self.c.max_words:
            return False
        start, settled = self._tail_of(self.text)
        return settled + len(WORD.findall(self.text, start)) >= self.c.max_words

    def held_back(self) -> int:
        """Characters at the end that might still become a stop sequence, so must not be streamed yet."""
        longest = 0
        for stop in self.c.stop:
            for size in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:size]):
                    longest = max(longest, size)
                    break
        return longest
