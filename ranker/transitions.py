"""What users want next: for each item, the items that followed it in users' positive sequences (within WINDOW
positions, nearer ones weighing more), as shares of all that followed it. A candidate's transition score sums those
shares from the user's latest positive items, newest first, each weighing DECAY times the one after it.

Learned with the model (from its training events) and saved beside its graphs; read by serving with numpy alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["DECAY", "FILE", "KEEP", "WINDOW", "Transitions"]

FILE = "transitions.npz"
WINDOW = 20  # positions after an item that count as following it (weight 1/distance)
KEEP = 100  # followers kept per item, the strongest (bounds the file: at most KEEP x items entries)
DECAY = 0.8  # each older recent item weighs this times the next newer one
# chosen on the validation slice of ml-1m's training period (the transition score alone ranking the catalog, NDCG@20;
# BENCHMARKS.md, issue 23, third session): window 1 0.138, 3 0.201, 10 0.225, 20 0.230, 50 0.232 (with the
# 10 latest items; 20 was a little better than 50 with the 20 latest); 10 latest items 0.225 against 5 0.220 and 20
# 0.225 (window 10); decay 0.8 over 0.5 and 0.9


class Transitions:
    """A sparse item x item table of follow shares (CSR arrays: rows are item rows, sorted columns per row)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, shares: np.ndarray) -> None:
        self.indptr, self.indices, self.shares = indptr, indices, shares
        # rows are contiguous and each row's columns sorted: (row, column) as one key is sorted over the whole table
        self._keys = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(indptr)) * self.rows + indices

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def fit(cls, sequences: Iterable[np.ndarray], items: int, window: int = WINDOW, keep: int = KEEP) -> Transitions:
        """From positive sequences (item rows in time order, one per user) over a catalog of `items` rows."""
        before: list[np.ndarray] = []
        after: list[np.ndarray] = []
        weight: list[np.ndarray] = []
        for rows in sequences:
            for distance in range(1, min(window, len(rows) - 1) + 1):
                before.append(rows[:-distance])
                after.append(rows[distance:])
                weight.append(np.full(len(rows) - distance, 1.0 / distance, np.float32))
        if not before:
            return cls(np.zeros(items + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
        a, b, w = np.concatenate(before), np.concatenate(after), np.concatenate(weight)
        keys = a.astype(np.int64) * items + b
        unique, inverse = np.unique(keys, return_inverse=True)
        summed = np.bincount(inverse, weights=w).astype(np.float32)
        row, column = unique // items, unique % items
        totals = np.bincount(row, weights=summed, minlength=items)
        shares = (summed / totals[row]).astype(np.float32)  # shares of all that followed: before dropping the weak
        order = np.lexsort((-shares, row))  # per row, strongest first
        starts = np.searchsorted(row[order], np.arange(items))
        rank = np.arange(len(order)) - starts[row[order]]
        kept = order[rank < keep]
        kept = kept[np.lexsort((column[kept], row[kept]))]  # per row, by column: what lookups search
        indptr = np.zeros(items + 1, np.int64)
        indptr[1:] = np.cumsum(np.bincount(row[kept], minlength=items))
        return cls(indptr, column[kept].astype(np.int32), shares[kept])

    def share(self, frm: np.ndarray, to: np.ndarray) -> np.ndarray:
        """The follow share of each pair (frm[i] -> to[i]); 0 for a pair never seen or a row past the table."""
        frm, to = np.asarray(frm, np.int64), np.asarray(to, np.int64)
        out = np.zeros(frm.shape, np.float32)
        # both ends inside the table: a column past it would alias the next row's key (row * rows + column)
        known = (frm >= 0) & (frm < self.rows) & (to >= 0) & (to < self.rows)
        out[known] = _lookup(self._keys, self.shares, frm[known] * self.rows + to[known])
        return out

    def scores(self, recent: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """[n, 2]: for each candidate, the decayed sum of shares from the recent items (newest first; -1 pads), and
        the share from the newest alone. `recent` is [r] (one user, every candidate) or [n, r] (a row each)."""
        recent, candidates = np.asarray(recent, np.int64), np.asarray(candidates, np.int64)
        out = np.zeros((len(candidates), 2), np.float32)
        if not recent.shape[-1]:
            return out
        weights = (DECAY ** np.arange(recent.shape[-1])).astype(np.float32)
        if recent.ndim == 2:
            pairs = self.share(recent, np.broadcast_to(candidates[:, None], recent.shape))
            out[:, 0] = pairs @ weights
            out[:, 1] = pairs[:, 0]
            return out
        # one user: the followers of their few recent items, summed once, then looked up per candidate
        columns, values = [], []
        for k, row in enumerate(recent.tolist()):
            if 0 <= row < self.rows:
                a, b = self.indptr[row], self.indptr[row + 1]
                columns.append(self.indices[a:b])
                values.append(self.shares[a:b] * weights[k])
        if columns:
            followers, at = np.unique(np.concatenate(columns), return_inverse=True)
            out[:, 0] = _lookup(followers, np.bincount(at, weights=np.concatenate(values)), candidates)
            if 0 <= recent[0] < self.rows:
                a, b = self.indptr[recent[0]], self.indptr[recent[0] + 1]
                out[:, 1] = _lookup(self.indices[a:b], self.shares[a:b], candidates)
        return out

    def save(self, path: Path) -> None:
        np.savez(path, indptr=self.indptr, indices=self.indices, shares=self.shares)

    @classmethod
    def load(cls, path: Path) -> Transitions:
        with np.load(path) as data:
            return cls(data["indptr"], data["indices"], data["shares"])


def _lookup(columns: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values[i] where columns[i] (sorted) equals each wanted column; 0 elsewhere."""
    out = np.zeros(len(wanted), np.float32)
    if not len(columns):
        return out
    columns = columns.astype(wanted.dtype, copy=False)  # searchsorted across dtypes takes a slow generic path
    place = np.minimum(np.searchsorted(columns, wanted), len(columns) - 1)
    hit = columns[place] == wanted
    out[hit] = values[place[hit]]
    return out
