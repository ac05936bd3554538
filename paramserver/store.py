"""In-memory embedding tables: uint64 keys to float32 rows in one contiguous arena."""

from __future__ import annotations

import numpy as np

__all__ = ["EmbeddingTable"]


class EmbeddingTable:
    """A growable arena of rows with a key index; lookups gather in one numpy call."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._rows = np.zeros((max(capacity, 1), dim), dtype=np.float32)
        self._index: dict[int, int] = {}

    @classmethod
    def from_dense(cls, keys: np.ndarray, rows: np.ndarray) -> EmbeddingTable:
        table = cls(rows.shape[1], capacity=len(keys) + 1024)
        table.upsert(keys, rows)
        return table

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows for `keys` (zeros where missing) and a found mask."""
        get = self._index.get
        slots = np.fromiter((get(k, -1) for k in keys.tolist()), dtype=np.int64, count=len(keys))
        found = slots >= 0
        values = self._rows[np.where(found, slots, 0)]
        values[~found] = 0.0
        return values, found

    def get(self, key: int) -> np.ndarray | None:
        slot = self._index.get(key)
        return None if slot is None else self._rows[slot]

    def upsert(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Insert or overwrite; the caller has validated shapes and values."""
        for key, row in zip(keys.tolist(), rows):
            slot = self._index.get(key)
            if slot is None:
                slot = len(self._index)
                if slot == len(self._rows):
                    self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)])
                self._index[key] = slot
            self._rows[slot] = row

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """All keys and their rows, for snapshots."""
        keys = np.fromiter(self._index.keys(), dtype=np.int64, count=len(self._index))
        slots = np.fromiter(self._index.values(), dtype=np.int64, count=len(self._index))
        return keys, self._rows[slots]
