"""Keys in the store. API keys: one row per key (its tenant, role, the SHA-256 of its secret, when it was made and
revoked), each change taking the next number of the keys' own sequence (the catalog's is left alone: a key is not
catalog data), so every gateway replica follows creations and revocations through the store (gateway/keys.py
verifies and caches them). Shared secrets: random keys every replica reads, made once by whichever asks first (the
page cursors' sealing key, gateway/cursors.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["KEYS_DDL", "SECRET_BYTES", "KeyRow", "StoredKeys"]

KEYS_DDL = """
CREATE TABLE IF NOT EXISTS access_keys (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL,
    secret_sha256 {blob} NOT NULL, created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION,
    label TEXT NOT NULL, seq BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS access_keys_by_seq ON access_keys (seq);
CREATE TABLE IF NOT EXISTS shared_secrets (name TEXT PRIMARY KEY, secret {blob} NOT NULL);
"""
SECRET_BYTES = 32

# key_id, tenant, role, created_at, revoked_at (None while live), label, secret_sha256
KeyRow = tuple[str, str, str, float, float | None, str, bytes]
_COLUMNS = "key_id, tenant, role, created_at, revoked_at, label, secret_sha256"


class StoredKeys:
    """The store's `access_keys` table, as part of `Store`: the same connection, transactions and write lock."""

    _transaction: Callable[..., AbstractContextManager[Any]]
    _sql: Callable[[str], str]
    _next: Callable[[Any, str, int], int]

    def add_key(self, key_id: str, tenant: str, role: str, secret_sha256: bytes, created_at: float, label: str) -> int:
        """Store a new key; returns the keys' sequence it took."""
        with self._transaction() as cur:
            seq = self._next(cur, "keys", 1)
            cur.execute(self._sql(f"INSERT INTO access_keys ({_COLUMNS}, seq) VALUES (?, ?, ?, ?, NULL, ?, ?, ?)"),
                        (key_id, tenant, role, created_at, label, secret_sha256, seq))
        return seq

    def revoke_key(self, key_id: str, at: float) -> int | None:
        """Revoke a live key; the sequence it took, or None when there is no such live key (nothing changes)."""
        with self._transaction() as cur:
            cur.execute(self._sql("SELECT 1 FROM access_keys WHERE key_id = ? AND revoked_at IS NULL"), (key_id,))
            if cur.fetchone() is None:
                return None
            seq = self._next(cur, "keys", 1)
            cur.execute(self._sql("UPDATE access_keys SET revoked_at = ?, seq = ? WHERE key_id = ?"), (at, seq, key_id))
        return seq

    def key_row(self, key_id: str) -> KeyRow | None:
        """One key's row, revoked or not."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql(f"SELECT {_COLUMNS} FROM access_keys WHERE key_id = ?"), (key_id,))
            row = cur.fetchone()
        return _row(row) if row is not None else None

    def key_rows(self) -> list[KeyRow]:
        """Every key, oldest first."""
        with self._transaction(write=False) as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM access_keys ORDER BY created_at, key_id")
            return [_row(r) for r in cur.fetchall()]

    def key_sequence(self) -> int:
        """The keys' sequence: the number of the latest change to any key."""
        with self._transaction(write=False) as cur:
            return _key_sequence(cur)

    def keys_changed(self, after: int) -> tuple[list[str], int]:
        """The ids of keys made or revoked after the keys' sequence `after`, and the sequence this answer covers."""
        with self._transaction(write=False) as cur:
            reached = _key_sequence(cur)
            cur.execute(self._sql("SELECT key_id FROM access_keys WHERE seq > ? AND seq <= ?"), (after, reached))
            return [str(r[0]) for r in cur.fetchall()], reached

    def shared_secret(self, name: str) -> bytes:
        """The secret called `name` (SECRET_BYTES random bytes), made by the first caller; every later call, from
        any process on this store, gets the same bytes (two first callers at once: one insert wins, both read it)."""
        with self._transaction() as cur:
            cur.execute(self._sql("INSERT INTO shared_secrets (name, secret) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"),
                        (name, os.urandom(SECRET_BYTES)))
            cur.execute(self._sql("SELECT secret FROM shared_secrets WHERE name = ?"), (name,))
            return bytes(cur.fetchone()[0])


def _key_sequence(cur: Any) -> int:
    cur.execute("SELECT value FROM counters WHERE name = 'keys'")
    return int(cur.fetchone()[0])


def _row(row: Any) -> KeyRow:
    key_id, tenant, role, created_at, revoked_at, label, digest = row
    return (str(key_id), str(tenant), str(role), float(created_at),
            None if revoked_at is None else float(revoked_at), str(label), bytes(digest))
