"""Candidate retrieval from four sources (interest ANN, latent clusters, fresh, popular), merged and deduplicated."""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from ranker.features import SOURCES, ItemTable

__all__ = ["Retriever", "Candidates"]

_POOL = 5_000  # newest / most popular items kept ready
_CLUSTERS_PER_USER = 8


@dataclass
class Candidates:
    """Item ids (1-based), a bitmask of the sources that proposed each, and [n, 2] source scores
    (interest inner product, the user's affinity to the item's latent cluster)."""

    ids: np.ndarray
    sources: np.ndarray
    scores: np.ndarray

    def source_names(self, index: int) -> list[str]:
        mask = int(self.sources[index])
        return [name for bit, name in enumerate(SOURCES) if mask >> bit & 1]


class Retriever:
    """IVF inner-product search over item embeddings; its k-means centroids double as latent clusters.

    New items are added in place (`add`): they become retrievable at once, with no rebuild.
    """

    def __init__(self, items: ItemTable, nprobe: int = 128, seed: int = 0) -> None:
        embeddings = items.embeddings
        n, dim = embeddings.shape
        self.nlist = int(np.clip(min(4 * math.sqrt(n), n // 39), 16, 4096))  # k-means wants >= 39 points a centroid
        self.quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(self.quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, min(n, 64 * self.nlist), replace=False)
        self.index.train(np.ascontiguousarray(embeddings[np.sort(sample)]))
        self.index.add_with_ids(embeddings, np.arange(n, dtype=np.int64))
        self.index.nprobe = min(nprobe, self.nlist)
        self.centroids = self.quantizer.reconstruct_n(0, self.nlist)
        self.items = items
        cluster = self.quantizer.search(embeddings, 1)[1][:, 0]
        order = np.lexsort((-items.popularity, cluster))  # by cluster, most popular first
        bounds = np.searchsorted(cluster[order], np.arange(self.nlist + 1))
        self.members = [order[a:b] for a, b in zip(bounds, bounds[1:])]
        self.popular = np.argsort(-items.popularity, kind="stable")[:_POOL]
        self.fresh = np.argsort(-items.published, kind="stable")[:_POOL]

    def add(self, rows: np.ndarray) -> None:
        """Make the items at `rows` of the (already grown) item table retrievable."""
        items = self.items
        embeddings = np.ascontiguousarray(items.embeddings[rows])
        self.index.add_with_ids(embeddings, rows.astype(np.int64))
        for row, cluster in zip(rows.tolist(), self.quantizer.search(embeddings, 1)[1][:, 0].tolist()):
            members = self.members[cluster]
            at = np.searchsorted(-items.popularity[members], -items.popularity[row])
            self.members[cluster] = np.insert(members, at, row)
        for pool, key in (("popular", items.popularity), ("fresh", items.published)):
            merged = np.concatenate([getattr(self, pool), rows])
            setattr(self, pool, merged[np.argsort(-key[merged], kind="stable")][:_POOL])

    def retrieve(self, user: np.ndarray | None, count: int) -> Candidates:
        """About `count` candidates: half by interest, a quarter from the user's latent clusters, an eighth
        each fresh and popular; a cold-start user gets half popular, half fresh."""
        count = min(count, len(self.items))
        rows, bits, scores = [], [], []

        def take(found: np.ndarray, source: int, score: np.ndarray | None = None, cluster_score: np.ndarray | None = None) -> None:
            rows.append(found)
            bits.append(np.full(len(found), 1 << source, np.uint8))
            pair = np.zeros((len(found), 2), np.float32)
            if score is not None:
                pair[:, 0] = score
            if cluster_score is not None:
                pair[:, 1] = cluster_score
            scores.append(pair)

        if user is None:
            take(self.popular[: count // 2], 3)
            take(self.fresh[: count - count // 2], 2)
        else:
            interest = count // 2 + count // 10  # sources overlap: ask a little more than half
            distance, found = self.index.search(user[None, :].astype(np.float32, copy=False), interest)
            keep = found[0] >= 0
            take(found[0][keep], 0, score=distance[0][keep])
            affinity = self.centroids @ user
            best = np.argpartition(-affinity, min(_CLUSTERS_PER_USER, self.nlist) - 1)[:_CLUSTERS_PER_USER]
            per_cluster = max(count // 4 // len(best), 1)
            for cluster in best.tolist():
                members = self.members[cluster][:per_cluster]
                take(members, 1, cluster_score=np.full(len(members), affinity[cluster], np.float32))
            rest = count - sum(len(r) for r in rows)
            take(self.fresh[: max(rest // 2, count // 8)], 2)
            take(self.popular[: max(rest - rest // 2, count // 8)], 3)

        merged = np.concatenate(rows)
        short = count - len(np.unique(merged))
        if short > 0:  # the sources overlapped more than expected: one deeper pass tops the set up
            if user is not None:
                distance, found = self.index.search(user[None, :].astype(np.float32, copy=False), interest + 2 * short)
                keep = found[0] >= 0
                take(found[0][keep][interest:], 0, score=distance[0][keep][interest:])
            else:
                take(self.popular[count // 2: count // 2 + 2 * short], 3)
            merged = np.concatenate(rows)
        unique, inverse = np.unique(merged, return_inverse=True)
        mask = np.zeros(len(unique), np.uint8)
        np.bitwise_or.at(mask, inverse, np.concatenate(bits))
        best_scores = np.zeros((len(unique), 2), np.float32)
        np.maximum.at(best_scores, inverse, np.concatenate(scores))
        if len(unique) > count:  # the top-up overshot: keep every multi-source item, then the best by interest
            keep = np.lexsort((-best_scores[:, 0], mask == 1))[:count]
            unique, mask, best_scores = unique[np.sort(keep)], mask[np.sort(keep)], best_scores[np.sort(keep)]
        return Candidates(ids=unique.astype(np.int64) + 1, sources=mask, scores=best_scores)
