"""Learned vector spaces in the store: a space's learned item and user vectors and its content projection, staged by
training and published in one transaction; an item's served vector in the space the store serves."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from errors import NotFound

__all__ = ["LearnedSpaces", "served_vector"]


def served_vector(content: np.ndarray | None, learned: bytes | None, projection: np.ndarray | None) -> np.ndarray | None:
    """An item's served vector: its learned one in the active space; else its content vector projected into that
    space (an item with no interactions yet is retrievable at once); the content vector itself before any space."""
    if learned is not None:
        return np.frombuffer(learned, np.float32)
    if content is None or projection is None:
        return content
    return (content @ projection).astype(np.float32)


class LearnedSpaces:
    """The store's learned-space tables (`spaces`, `learned_items`, `learned_users`), as part of `Store`: the same
    connection, transactions and write lock."""

    name: str
    _projections: dict[int, np.ndarray]
    _transaction: Callable[..., AbstractContextManager[Any]]
    _sql: Callable[[str], str]
    _next: Callable[[Any, str, int], int]
    _sequence: Callable[[Any], int]

    def _active_space(self, cur: Any) -> int:
        cur.execute("SELECT value FROM counters WHERE name = 'active_space'")
        return int(cur.fetchone()[0])

    def _projection(self, cur: Any, space: int) -> np.ndarray:
        """A space's content projection [content dim, dim] (immutable once added: cached by id)."""
        if space not in self._projections:
            cur.execute(self._sql("SELECT projection FROM spaces WHERE id = ?"), (space,))
            blob = bytes(cur.fetchone()[0])
            dim = math.isqrt(len(blob) // 4)
            self._projections[space] = np.frombuffer(blob, np.float32).reshape(dim, dim)
        return self._projections[space]

    def add_space(self, model: str, trained_to: int, projection: np.ndarray, items: tuple[np.ndarray, np.ndarray],
                  users: tuple[np.ndarray, np.ndarray]) -> int:
        """Stage a learned vector space: the items' and users' learned vectors ((ids, vectors) each) and the
        projection [dim, dim] that places an item without a learned vector by its content vector. Nothing is
        served from it until `publish_space`. Returns its id."""
        with self._transaction() as cur:
            space = self._next(cur, "space", 1)
            cur.execute(self._sql("INSERT INTO spaces (id, model, projection, trained_to) VALUES (?, ?, ?, ?)"),
                        (space, model, np.ascontiguousarray(projection, np.float32).tobytes(), trained_to))
            for table, column, (ids, vectors) in (("learned_items", "item_id", items), ("learned_users", "user_id", users)):
                blobs = np.ascontiguousarray(vectors, np.float32)
                cur.executemany(self._sql(f"INSERT INTO {table} (space, {column}, vector) VALUES (?, ?, ?)"),
                                [(space, int(i), blobs[n].tobytes()) for n, i in enumerate(ids.tolist())])
            return space

    def publish_space(self, space: int) -> int:
        """Serve a staged space (0: none, content vectors as they are): every item takes a new sequence, so that
        followers re-read its served vector in it (and retrieval, ranking and drift move to it together). Returns
        the sequence reached."""
        with self._transaction() as cur:
            cur.execute(self._sql("SELECT count(*) FROM spaces WHERE id = ?"), (space,))
            if space and not int(cur.fetchone()[0]):
                raise NotFound(f"space {space}: no such learned space in {self.name}")
            cur.execute(self._sql("UPDATE counters SET value = ? WHERE name = 'active_space'"), (space,))
            cur.execute("SELECT id FROM items ORDER BY seq")
            ids = [int(r[0]) for r in cur.fetchall()]
            if ids:
                first = self._next(cur, "seq", len(ids))
                cur.executemany(self._sql("UPDATE items SET seq = ? WHERE id = ?"), [(first + n, i) for n, i in enumerate(ids)])
            return self._sequence(cur)

    def active_space(self) -> int:
        """The learned space items are served in (0: none yet; served vectors are content vectors)."""
        with self._transaction(write=False) as cur:
            return self._active_space(cur)

    def space_trained_to(self, space: int) -> int:
        """The catalog sequence a space's training read up to (events after it are not in its vectors)."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT trained_to FROM spaces WHERE id = ?"), (space,))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"space {space}: no such learned space in {self.name}")
        return int(row[0])

    def projection(self, space: int) -> np.ndarray:
        """A space's content projection [dim, dim] (content vector @ projection = the item's place in the space)."""
        with self._transaction(write=False) as cur:
            return self._projection(cur, space)

    def learned_items(self, space: int) -> tuple[np.ndarray, np.ndarray]:
        """A space's learned item vectors: (item ids, vectors [n, dim])."""
        return self._learned("learned_items", "item_id", space)

    def learned_users(self, space: int) -> tuple[np.ndarray, np.ndarray]:
        """A space's learned user vectors: (user ids, vectors [n, dim])."""
        return self._learned("learned_users", "user_id", space)

    def _learned(self, table: str, column: str, space: int) -> tuple[np.ndarray, np.ndarray]:
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(f"SELECT {column}, vector FROM {table} WHERE space = ? ORDER BY {column}"), (space,))
            rows = cur.fetchall()
        ids = np.array([int(r[0]) for r in rows], np.int64)
        vectors = np.stack([np.frombuffer(bytes(r[1]), np.float32) for r in rows]) if rows else np.zeros((0, 0), np.float32)
        return ids, vectors
