"""Choosing the semantic cache's threshold on a labelled tuning set, and measuring it on another (held-out) set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from generator.caches import Answer, EmbeddingCache, SemanticCache

__all__ = ["CacheAccuracy", "measure", "tune_threshold"]

Pairs = Sequence[tuple[str, str]]
_NOTHING = Answer(((0, ""),), (), 0, 0)


@dataclass(frozen=True)
class CacheAccuracy:
    threshold: float
    hit_rate: float  # paraphrase pairs answered from the first prompt's entry
    false_hit_rate: float  # contrast pairs answered so: each one a wrong answer


def measure(embed: Callable[[str], np.ndarray], threshold: float, paraphrases: Pairs, contrasts: Pairs) -> CacheAccuracy:
    """Through the real SemanticCache: each pair in its own scope, the first prompt cached, the second looked up."""
    cache = SemanticCache(EmbeddingCache(embed), threshold)
    rates = []
    for label, pairs in (("paraphrase", paraphrases), ("contrast", contrasts)):
        hits = 0
        for i, (first, second) in enumerate(pairs):
            cache.put(f"{label}-{i}", first, _NOTHING)
            hits += cache.get(f"{label}-{i}", second) is not None
        rates.append(hits / len(pairs))
    return CacheAccuracy(threshold, rates[0], rates[1])


def tune_threshold(embed: Callable[[str], np.ndarray], paraphrases: Pairs, contrasts: Pairs,
                   max_false_hit_rate: float = 0.02, grid: Sequence[float] = tuple(np.arange(0.70, 0.991, 0.01))
                   ) -> CacheAccuracy:
    """The lowest threshold on `grid` whose false-hit rate on these pairs is at most `max_false_hit_rate` (the
    most hits that error allows), measured through the cache."""
    for threshold in grid:
        found = measure(embed, round(float(threshold), 3), paraphrases, contrasts)
        if found.false_hit_rate <= max_false_hit_rate:
            return found
    return measure(embed, 1.0, paraphrases, contrasts)
