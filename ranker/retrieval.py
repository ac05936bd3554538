"""Candidate retrieval from several sources (interest, popular, fresh), merged and deduplicated."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from world import World

__all__ = ["Retriever", "Candidates", "SOURCES"]

SOURCES = ("interest", "popular", "fresh")
_POOL = 5_000  # how many popular / fresh items are kept ready


@dataclass
class Candidates:
    """Item ids (1-based) and, per item, a bitmask of the sources that proposed it."""

    ids: np.ndarray
    sources: np.ndarray

    def source_names(self, index: int) -> list[str]:
        mask = int(self.sources[index])
        return [name for bit, name in enumerate(SOURCES) if mask >> bit & 1]


class Retriever:
    """Exact inner-product interest retrieval plus popularity and freshness pools."""

    def __init__(self, world: World) -> None:
        self.embeddings = np.ascontiguousarray(world.item_embeddings, dtype=np.float32)
        pool = min(_POOL, len(self.embeddings))
        self.popular = np.argsort(-np.asarray(world.item_popularity), kind="stable")[:pool]
        self.fresh = np.argsort(-np.asarray(world.item_published), kind="stable")[:pool]

    def retrieve(self, user: np.ndarray | None, count: int) -> Candidates:
        """About `count` candidates: 70% by interest and 15% each popular and fresh (50/50 cold)."""
        count = min(count, len(self.embeddings))
        if user is None:
            parts = [(np.empty(0, np.int64), 0), (self.popular, 1), (self.fresh, 2)]
            shares = [0, count // 2, count - count // 2]
        else:
            interest_n = count * 7 // 10
            affinity = self.embeddings @ user
            top = np.argpartition(-affinity, interest_n - 1)[:interest_n] if interest_n else np.empty(0, np.int64)
            parts = [(top, 0), (self.popular, 1), (self.fresh, 2)]
            shares = [interest_n, (count - interest_n) // 2, count - interest_n - (count - interest_n) // 2]
        index = np.concatenate([p[:n] for (p, _), n in zip(parts, shares)])
        bits = np.concatenate([np.full(min(n, len(p)), 1 << b, np.uint8) for (p, b), n in zip(parts, shares)])
        unique, inverse = np.unique(index, return_inverse=True)
        mask = np.zeros(len(unique), np.uint8)
        np.bitwise_or.at(mask, inverse, bits)
        return Candidates(ids=unique.astype(np.int64) + 1, sources=mask)
