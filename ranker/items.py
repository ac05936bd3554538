"""The ranker's items, derived from the store's change feed: vectors, codes, titles and servability by dense id.

Row = item id - 1. Arrays grow by doubling (amortised: no whole-table copy per item). A re-upserted item is
rewritten in place; a reader that holds an older view sees either the old or the new row of that one item.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from catalog.records import StoredItem
from ranker.features import MAX_CODES, FeatureSpace

__all__ = ["TREND_HALF_LIVES", "ItemTable", "trend_before"]

# The trend: each item's events, each weighing half as much for every `half-life` events logged after it (all items'
# events count, so the decay is by the catalog's traffic, not its clock: a MovieLens import whose ratings span years
# and a live feed decay alike). Two half-lives: what is popular right now, and over a longer stretch.
TREND_HALF_LIVES = (5_000, 50_000)


class ItemTable:
    """Per-item state for retrieval, features, filters and answers."""

    ARRAYS = ("vectors", "content", "columns", "numeric", "category", "published", "popularity", "trend",
              "servable")  # by row
    LISTS = ("titles", "external", "labels", "first_category")  # by row, Python objects

    def __init__(self, space: FeatureSpace, capacity: int = 1024) -> None:
        self.space = space
        self.size = 0  # rows in use: the highest item id seen
        self._capacity = 0
        self.vectors = np.zeros((0, space.dim), np.float32)  # served: learned, or content projected into the space
        self.content = np.zeros((0, space.dim), np.float32)
        self.columns = np.zeros((0, MAX_CODES), np.int32)
        self.numeric = np.zeros((0, len(space.numeric["item"])), np.float32)
        self.category = np.zeros(0, np.int64)
        self.published = np.zeros(0, np.int64)
        self.popularity = np.zeros(0, np.float32)
        self.trend = np.zeros((0, len(TREND_HALF_LIVES)), np.float64)
        self.servable = np.zeros(0, bool)
        self.titles: list[str] = []
        self.external: list[str] = []
        self.labels: list[tuple[str, ...]] = []  # categories, then tags: what filters match
        self.first_category: list[str] = []
        self._grow(capacity)

    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        """Rows allocated: arrays kept beside this table (the ranker's item terms) grow to it."""
        return self._capacity

    def _grow(self, needed: int) -> None:
        if needed <= self._capacity:
            return
        capacity = max(needed, 2 * self._capacity, 1024)
        for name in self.ARRAYS:
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)
        grow = capacity - len(self.titles)
        self.titles += [""] * grow
        self.external += [""] * grow
        self.labels += [()] * grow
        self.first_category += [""] * grow
        self._capacity = capacity

    def copy(self) -> ItemTable:
        """A private copy of the rows in use (to save while the original keeps changing)."""
        copy = ItemTable(self.space, capacity=max(self.size, 1))
        for name in (*self.ARRAYS, *self.LISTS):
            getattr(copy, name)[:self.size] = getattr(self, name)[:self.size]
        copy.size = self.size
        return copy

    def apply(self, items: Iterable[StoredItem]) -> tuple[np.ndarray, np.ndarray]:
        """Apply changed items (latest state each). Returns (rows now servable, rows no longer servable):
        an item is servable once it has a vector and is neither hidden nor deleted."""
        changed = list(items)
        if not changed:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        self._grow(max(i.id for i in changed))
        added, removed = [], []
        for item in changed:
            row = item.id - 1
            was = bool(self.servable[row])
            now = item.servable and item.vector is not None
            if item.vector is not None:
                self.vectors[row] = item.vector
            if item.content is not None:
                self.content[row] = item.content
            codes = self.space.item_codes(item.categories, item.tags, item.attributes)
            self.columns[row], self.numeric[row], self.category[row] = codes.columns, codes.numeric, codes.category
            self.published[row] = item.published
            self.titles[row], self.external[row] = item.title, item.external_id
            self.labels[row] = (*item.categories, *item.tags)
            self.first_category[row] = item.categories[0] if item.categories else ""
            self.servable[row] = now
            if now:
                added.append(row)  # new, or its vector or fields changed: re-index and recompute its term
            elif was:
                removed.append(row)
            self.size = max(self.size, item.id)
        return np.asarray(added, np.int64), np.asarray(removed, np.int64)

    def add_popularity(self, item_ids: np.ndarray) -> None:
        """Count interactions (one per event, in log order) toward items' popularity and trend."""
        rows = np.asarray(item_ids, np.int64) - 1
        m = len(rows)
        if not m:
            return
        keep = (rows >= 0) & (rows < self.size)
        age = (m - 1 - np.arange(m))[keep]  # events logged after each one in this batch
        rows = rows[keep]
        np.add.at(self.popularity, rows, 1.0)
        for k, half_life in enumerate(TREND_HALF_LIVES):
            self.trend[:self.size, k] *= 0.5 ** (m / half_life)
            np.add.at(self.trend[:, k], rows, 0.5 ** (age / half_life))

    def features(self, rows: np.ndarray) -> np.ndarray:
        """The item part [n, 2048] of the rows (what the item tower turns into item terms)."""
        return self.space.item_features(self.vectors[rows], self.content[rows], self.columns[rows], self.numeric[rows])

    def matches(self, rows: np.ndarray, include: set[str], exclude: set[str]) -> np.ndarray:
        """Which rows carry at least one `include` label (when given) and none of `exclude` (categories and tags)."""
        keep = np.ones(len(rows), bool)
        if not include and not exclude:
            return keep
        for k, row in enumerate(rows.tolist()):
            labels = self.labels[row]
            if include and not include.intersection(labels):
                keep[k] = False
            elif exclude and exclude.intersection(labels):
                keep[k] = False
        return keep


def trend_before(event_rows: np.ndarray, rows: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """What ItemTable.trend held for item `rows[i]` after taking in the first `cutoffs[i]` events of a log whose item
    rows are `event_rows` (training: each example reads the log strictly before its moment). [len(rows), 2]."""
    out = np.zeros((len(rows), len(TREND_HALF_LIVES)), np.float64)
    half = np.asarray(TREND_HALF_LIVES, np.float64)
    table = np.zeros((int(max(event_rows.max(initial=-1), rows.max(initial=-1))) + 1, len(half)), np.float64)
    base = 0  # the table holds sums of 2 ** ((j - base) / half_life): `base` moves along before they overflow
    taken = 0
    order = np.argsort(cutoffs, kind="stable")
    cuts, starts = np.unique(cutoffs[order], return_index=True)
    for cut, group in zip(cuts.tolist(), np.split(order, starts[1:])):
        if (cut - base) / half.min() > 400:
            table *= 0.5 ** ((cut - base) / half)
            base = cut
        span = np.arange(taken, cut)
        span = span[event_rows[span] >= 0]  # an event on no item still counts toward the others' decay
        np.add.at(table, event_rows[span], 0.5 ** ((base - span)[:, None] / half))
        taken = max(taken, cut)
        wanted = rows[group]
        fine = wanted >= 0
        out[group[fine]] = table[wanted[fine]] * 0.5 ** ((cut - 1 - base) / half)
    return out
