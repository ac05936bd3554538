"""API keys: each belongs to one tenant, has a role (read, write or admin), is stored hashed, compared in constant
time, and can be revoked.

A key reads `fsk_<id>_<secret>`. The id finds the row; the secret is 32 random bytes, stored as its SHA-256
(a fast hash is enough for a 256-bit random secret: there is nothing to guess, unlike a password). The
secret is shown once, when the key is created. Keys live in a small SQLite file beside the gateway
(`feedserve keys` manages it; the gateway reads it on every call, so a revocation is effective at once).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KeyStore", "ApiKey", "ROLES", "parse_bearer", "role_of"]

# Each role may do what the ones before it may (gateway/auth.py says which methods need which): read asks for
# feeds and generations, write also sends interactions and changes the catalog, admin also deletes and runs the
# deployment (keys, models, modes, costs).
ROLES = ("read", "write", "admin")
# A key made before roles were split was "tenant": it could call everything but the admin methods, which is write.
_FORMER = {"tenant": "write"}
_TOKEN = re.compile(r"^fsk_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ApiKey:
    """A key's row, without its secret."""

    key_id: str
    tenant: str
    role: str
    created_at: float
    revoked_at: float | None
    label: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def may(self, needed: str) -> bool:
        """Whether this key's role covers `needed` (one of ROLES)."""
        return ROLES.index(self.role) >= ROLES.index(needed)


def role_of(name: str) -> str:
    """A role as given (or as stored by an older release), checked: one of ROLES."""
    role = _FORMER.get(name, name)
    if role not in ROLES:
        raise ValueError(f"role is expected to be one of {', '.join(ROLES)}, got {name!r}")
    return role


def _key(row: tuple) -> ApiKey:
    key_id, tenant, role, created_at, revoked_at, label = row
    return ApiKey(key_id, tenant, role_of(role), created_at, revoked_at, label)


def parse_bearer(header: str) -> str | None:
    """The token of an `authorization: Bearer <token>` header, or None."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class KeyStore:
    """The keys of one deployment, in SQLite at `path` (created 0600 when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch(mode=0o600)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL, secret_sha256 BLOB NOT NULL,
            created_at REAL NOT NULL, revoked_at REAL, label TEXT NOT NULL DEFAULT '')""")

    def close(self) -> None:
        self._db.close()

    def create(self, tenant: str, role: str = "write", label: str = "") -> tuple[ApiKey, str]:
        """A new key for `tenant` with `role`; returns its row and the token, which is never shown again."""
        if not _TENANT.match(tenant):
            raise ValueError(f"tenant {tenant!r} is expected to be 1-64 letters, digits, '.', '_' or '-'")
        role = role_of(role)
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL, ?)",
                             (key_id, tenant, role, hashlib.sha256(secret.encode()).digest(), now, label))
        return ApiKey(key_id, tenant, role, now, None, label), f"fsk_{key_id}_{secret}"

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT key_id, tenant, role, created_at, revoked_at, label FROM api_keys "
                                    "ORDER BY created_at").fetchall()
        keys = [_key(row) for row in rows]
        return keys if include_revoked else [k for k in keys if k.revoked_at is None]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; False if there is no such live key."""
        with self._lock:
            cursor = self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                                      (time.time(), key_id))
        return cursor.rowcount == 1

    def verify(self, token: str) -> ApiKey | None:
        """The live key this token is, or None. The secret is compared in constant time."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT key_id, tenant, role, created_at, revoked_at, label, secret_sha256 "
                                   "FROM api_keys WHERE key_id = ?", (match["id"],)).fetchone()
        digest = hashlib.sha256(match["secret"].encode()).digest()
        # compare even when there is no row, so that timing does not tell whether an id exists
        stored = row[6] if row is not None else b"\0" * 32
        if not hmac.compare_digest(digest, stored) or row is None or row[4] is not None:
            return None
        return _key(row[:6])
