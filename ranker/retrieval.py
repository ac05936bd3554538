"""Candidate retrieval from four sources (interest ANN, latent clusters, fresh, popular), merged and deduplicated.

The index follows the catalog: servable items are added and removed in place as their changes arrive. It is
exact (flat) while the catalog is small; as it grows, an IVF index with fresh k-means clusters is trained in
the background and swapped in, with the changes that arrived during training replayed onto it.

A learned space fills only the leading coordinates of the served width (64 of 384, say): the index holds only the
coordinates some item uses (its `width`), so a search reads a sixth of the memory for the same inner products.
An item that uses a coordinate past it (another space was published) rebuilds the index at the new width.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import faiss
import numpy as np

from ranker.features import SOURCES
from ranker.items import ItemTable

__all__ = ["Retriever", "Candidates", "FLAT_BELOW"]

_POOL = 5_000  # newest / most popular items kept ready
_CLUSTERS_PER_USER = 8
FLAT_BELOW = 20_000  # exact inner product search up to this many items


@dataclass
class Candidates:
    """Item ids (1-based), a bitmask of the sources that proposed each, and their interest scores (user.item for
    interest candidates, 0 elsewhere)."""

    ids: np.ndarray
    sources: np.ndarray
    scores: np.ndarray

    def source_names(self, index: int) -> list[str]:
        mask = int(self.sources[index])
        return [name for bit, name in enumerate(SOURCES) if mask >> bit & 1]


@dataclass
class _Index:
    """One built index with its clusters (empty when the catalog is too small for k-means)."""

    search: faiss.Index
    centroids: np.ndarray
    built_for: int
    width: int  # the leading coordinates held: every indexed item is zero past them
    quantizer: faiss.Index | None = None  # the IVF's: held here so that it lives as long as the index


_WIDTH_STEP = 16


def _width(vectors: np.ndarray) -> int:
    """The leading coordinates `vectors` use, rounded up to a multiple of 16 (at least 16, at most all)."""
    if not len(vectors):
        return min(_WIDTH_STEP, vectors.shape[1])
    used = np.flatnonzero(np.any(vectors != 0, axis=0))
    last = int(used[-1]) + 1 if len(used) else 1
    return min(-(-last // _WIDTH_STEP) * _WIDTH_STEP, vectors.shape[1])


def _clusters(n: int) -> int:
    nlist = int(np.clip(4 * math.sqrt(max(n, 1)), 8, 4096))
    return min(nlist, n // 39)  # k-means wants >= 39 points a centroid


def _build(vectors: np.ndarray, rows: np.ndarray, nprobe: int, seed: int, width: int = 0) -> _Index:
    width = max(width, _width(vectors))
    vectors = np.ascontiguousarray(vectors[:, :width])
    n, dim = vectors.shape
    nlist = _clusters(n)
    centroids = np.zeros((0, dim), np.float32)
    if nlist >= 2:
        kmeans = faiss.Kmeans(dim, nlist, niter=10, seed=seed, spherical=True, verbose=False)
        kmeans.train(np.ascontiguousarray(vectors[np.random.default_rng(seed).permutation(n)[:64 * nlist]]))
        centroids = np.asarray(kmeans.centroids, np.float32).copy()
    quantizer = None
    if n >= FLAT_BELOW and nlist >= 2:
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(centroids)  # the k-means centroids: the IVF needs no training of its own
        index: faiss.Index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(nprobe, nlist)  # type: ignore[attr-defined]  # faiss's SWIG stubs type the base Index
    else:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors), rows.astype(np.int64))
    return _Index(index, centroids, n, width, quantizer)


class Retriever:
    """Inner-product search over servable items' vectors; k-means centroids double as latent clusters.

    Callers serialise `add`, `remove` and `retrieve` (the ranker's lock); `rebuild` trains outside that lock."""

    def __init__(self, items: ItemTable, nprobe: int = 128, seed: int = 0) -> None:
        # One query at a time gains nothing measurable from OpenMP (1.86 ms on 1 or 2 threads at 200,000 items),
        # and under load an OpenMP barrier waits for its slowest thread: with the cores shared by the model, the
        # other requests and the gateway, that straggler was a 20-60 ms retrieval stage.
        faiss.omp_set_num_threads(1)
        self.items, self.nprobe, self.seed = items, nprobe, seed
        self.cluster_of = np.full(0, -1, np.int32)
        self.members: list[set[int]] = []
        self._index = _build(np.zeros((0, items.space.dim), np.float32), np.zeros(0, np.int64), nprobe, seed)
        self._pools: dict[str, np.ndarray] | None = None
        self._pools_at = 0.0  # when the pools were computed: popularity alone refreshes them at most every second
        self._in_index = np.zeros(0, bool)  # rows the index holds: removing absent ones would scan it for nothing
        self._during_rebuild: list[tuple[str, np.ndarray]] | None = None
        self._rebuilding: threading.Thread | None = None
        self.rebuilds = 0

    @property
    def count(self) -> int:
        return int(self._index.search.ntotal)

    @property
    def width(self) -> int:
        """The leading coordinates the index holds: every servable item is zero past them."""
        return self._index.width

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self._index.search, faiss.IndexIVFFlat) else "flat"

    # -- following the catalog ------------------------------------------------------------------------

    def add(self, rows: np.ndarray) -> None:
        """(Re-)index servable rows: their vectors may be new."""
        if not len(rows):
            return
        vectors = self.items.vectors[rows]
        width = self._index.width
        if width < vectors.shape[1] and np.any(vectors[:, width:]):  # a coordinate the index does not hold
            self._rebuild_wider(_width(vectors))
            if self._during_rebuild is not None:  # replayed onto a narrower background build: it widens too
                self._during_rebuild.append(("add", rows.copy()))
            return
        self._remove_from_index(rows)
        self._index.search.add_with_ids(np.ascontiguousarray(vectors[:, :width]), rows.astype(np.int64))
        self._mark(rows, True)
        self._assign(rows)
        self._pools = None
        if self._during_rebuild is not None:
            self._during_rebuild.append(("add", rows.copy()))

    def remove(self, rows: np.ndarray) -> None:
        """Drop rows that are no longer servable (deleted, hidden)."""
        if not len(rows):
            return
        self._remove_from_index(rows)
        self._pools = None
        if self._during_rebuild is not None:
            self._during_rebuild.append(("remove", rows.copy()))

    def _mark(self, rows: np.ndarray, indexed: bool) -> None:
        if len(self._in_index) < self.items.size:
            grown = np.zeros(max(self.items.size, 2 * len(self._in_index)), bool)
            grown[:len(self._in_index)] = self._in_index
            self._in_index = grown
        self._in_index[rows] = indexed

    def _remove_from_index(self, rows: np.ndarray) -> None:
        present = rows[rows < len(self._in_index)]
        present = present[self._in_index[present]]
        if len(present):
            self._index.search.remove_ids(faiss.IDSelectorBatch(present.astype(np.int64)))
            self._in_index[present] = False
        if len(self.cluster_of):
            for row in rows.tolist():
                if row < len(self.cluster_of) and self.cluster_of[row] >= 0:
                    self.members[self.cluster_of[row]].discard(row)
                    self.cluster_of[row] = -1

    def _assign(self, rows: np.ndarray) -> None:
        centroids = self._index.centroids
        if not len(centroids):
            return
        if len(self.cluster_of) < self.items.size:
            grown = np.full(max(self.items.size, 2 * len(self.cluster_of)), -1, np.int32)
            grown[:len(self.cluster_of)] = self.cluster_of
            self.cluster_of = grown
        best = np.argmax(self.items.vectors[rows, :centroids.shape[1]] @ centroids.T, axis=1)
        for row, cluster in zip(rows.tolist(), best.tolist()):
            self.cluster_of[row] = cluster
            self.members[cluster].add(row)

    def popularity_changed(self) -> None:
        """Interactions moved popularity: the popular pool follows within a second (not on every event batch)."""
        if self._pools is not None and time.monotonic() - self._pools_at > 1.0:
            self._pools = None

    def wants_rebuild(self) -> bool:
        """True when the catalog has doubled since the index was built (and is big enough to cluster)."""
        servable = int(self.items.servable[:self.items.size].sum())
        return self._rebuilding is None and servable >= 2 * max(self._index.built_for, 312)

    def _rebuild_wider(self, width: int) -> None:
        """Rebuild at once (the caller holds the lock) over every servable item at `width` or more: rare, when a
        space that uses more coordinates is published."""
        rows = np.flatnonzero(self.items.servable[:self.items.size]).astype(np.int64)
        self._swap(_build(self.items.vectors[rows], rows, self.nprobe, self.seed, width), rows, [])

    def _swap(self, built: _Index, rows: np.ndarray, changes: list[tuple[str, np.ndarray]]) -> None:
        self._index = built
        self._in_index = np.zeros(self.items.size, bool)
        self._mark(rows, True)
        self.cluster_of = np.full(self.items.size, -1, np.int32)
        self.members = [set() for _ in range(len(built.centroids))]
        self._assign(rows)
        for op, changed in changes:
            (self.add if op == "add" else self.remove)(changed)
        self._pools = None
        self.rebuilds += 1

    def rebuild(self, lock: threading.Lock) -> None:
        """Train a new index (IVF once big enough) on a snapshot, outside `lock`; then, under it, replay what changed
        meanwhile and swap. Runs in the caller's thread: see `rebuild_in_background`."""
        with lock:
            rows = np.flatnonzero(self.items.servable[:self.items.size]).astype(np.int64)
            vectors = self.items.vectors[rows].copy()
            self._during_rebuild = []
        built = _build(vectors, rows, self.nprobe, self.seed)
        with lock:
            changes, self._during_rebuild = self._during_rebuild, None
            self._swap(built, rows, changes)

    def rebuild_in_background(self, lock: threading.Lock) -> None:
        def run() -> None:
            try:
                self.rebuild(lock)
            finally:
                self._rebuilding = None
        self._rebuilding = threading.Thread(target=run, name="retrieval-rebuild", daemon=True)
        self._rebuilding.start()

    def join_rebuild(self) -> None:
        thread = self._rebuilding
        if thread is not None:
            thread.join()

    # -- serving ----------------------------------------------------------------------------------------

    def _pool(self, name: str) -> np.ndarray:
        if self._pools is None:
            servable = np.flatnonzero(self.items.servable[:self.items.size])
            popular = servable[np.argsort(-self.items.popularity[servable], kind="stable")[:_POOL]]
            fresh = servable[np.argsort(-self.items.published[servable], kind="stable")[:_POOL]]
            self._pools = {"popular": popular, "fresh": fresh}
            self._pools_at = time.monotonic()
        return self._pools[name]

    def retrieve(self, user: np.ndarray | None, count: int) -> Candidates:
        """About `count` candidates: half by interest, a quarter from the user's latent clusters, an eighth
        each fresh and popular; a cold-start user gets half popular, half fresh."""
        count = min(count, self.count)
        rows: list[np.ndarray] = []
        bits: list[np.ndarray] = []
        scores: list[np.ndarray] = []

        def take(found: np.ndarray, source: int, score: np.ndarray | None = None) -> None:
            rows.append(found.astype(np.int64))
            bits.append(np.full(len(found), 1 << source, np.uint8))
            scores.append(np.zeros(len(found), np.float32) if score is None else score.astype(np.float32))

        interest = count // 2 + count // 10  # sources overlap: ask a little more than half
        if user is None:
            take(self._pool("popular")[: count // 2], 3)
            take(self._pool("fresh")[: count - count // 2], 2)
        else:
            query = np.ascontiguousarray(user[None, :self._index.width], dtype=np.float32)
            # one search deep enough for the top-up too: a second search would scan the same lists again (the
            # sources overlap most of the time, and scanning, not the deeper heap, is what a search costs)
            distance, found = self._index.search.search(query, count + count // 4)
            keep = found[0] >= 0
            nearest, similarity = found[0][keep], distance[0][keep]
            reserve, reserve_scores = nearest[interest:], similarity[interest:]
            take(nearest[:interest], 0, similarity[:interest])
            centroids = self._index.centroids
            if len(centroids):
                affinity = centroids @ user[:centroids.shape[1]]
                best = np.argsort(-affinity)[:_CLUSTERS_PER_USER]
                per_cluster = max(count // 4 // len(best), 1)
                for cluster in best.tolist():
                    members = np.fromiter(self.members[cluster], np.int64, len(self.members[cluster]))
                    if len(members) > per_cluster:
                        members = members[np.argpartition(-self.items.popularity[members], per_cluster - 1)[:per_cluster]]
                    take(members, 1)
            rest = count - sum(len(r) for r in rows)
            take(self._pool("fresh")[: max(rest // 2, count // 8)], 2)
            take(self._pool("popular")[: max(rest - rest // 2, count // 8)], 3)

        merged = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        short = count - len(np.unique(merged))
        if short > 0 and user is not None:  # the sources overlapped more than expected: the next by interest top up
            take(reserve[:2 * short], 0, reserve_scores[:2 * short])
            merged = np.concatenate(rows)
        elif short > 0:
            take(self._pool("popular")[count // 2: count // 2 + 2 * short], 3)
            merged = np.concatenate(rows)
        unique, inverse = np.unique(merged, return_inverse=True)
        mask = np.zeros(len(unique), np.uint8)
        np.bitwise_or.at(mask, inverse, np.concatenate(bits))
        best_scores = np.zeros(len(unique), np.float32)
        np.maximum.at(best_scores, inverse, np.concatenate(scores))
        if len(unique) > count:  # the top-up overshot: keep every multi-source item, then the best by interest
            keep = np.sort(np.lexsort((-best_scores, mask == 1))[:count])
            unique, mask, best_scores = unique[keep], mask[keep], best_scores[keep]
        return Candidates(ids=unique + 1, sources=mask, scores=best_scores)
