"""API keys: each belongs to one tenant, has a role (read, write or admin), is stored hashed, compared in constant
time, and can be revoked.

A key reads `fsk_<id>_<secret>`. The id finds the row; the secret is 32 random bytes, stored as its SHA-256
(a fast hash is enough for a 256-bit random secret: there is nothing to guess, unlike a password). The
secret is shown once, when the key is created. Keys live in the deployment's store (catalog/keys.py), so every
gateway replica on one PostgreSQL sees the same keys. A gateway keeps the rows it has looked up (found or not)
and follows the store's sequence to drop the ones that change: a revocation reaches every replica within a
poll (0.2 s), and a call with a known key never waits for the store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from catalog import open_store
from catalog.feed import Poller
from catalog.keys import KeyRow
from errors import InvalidArgument

__all__ = ["KeyStore", "ApiKey", "ROLES", "import_key_file", "parse_bearer", "role_asked", "role_of"]

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


def role_asked(role: str, admin: bool) -> str:
    """The role a request for a new key names: `role` ("" for none), or the older `admin` flag's (admin, else
    write); both given and disagreeing is INVALID_ARGUMENT naming `admin`, an unknown role naming `role`."""
    if admin and role not in ("", "admin"):
        raise InvalidArgument("admin", f"admin=true with role {role!r}: give one or the other")
    if role and role not in ROLES:
        raise InvalidArgument("role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    return role or ("admin" if admin else "write")


def _key(row: tuple) -> ApiKey:
    """A stored row (its secret's hash, when present, left out) as an ApiKey."""
    key_id, tenant, role, created_at, revoked_at, label = row[:6]
    return ApiKey(key_id, tenant, role_of(role), created_at, revoked_at, label)


def parse_bearer(header: str) -> str | None:
    """The token of an `authorization: Bearer <token>` header, or None."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class KeyStore:
    """The keys of one deployment, in its store (a SQLite path or a postgresql:// URL); `follow()` keeps this
    process's cache in step with changes made elsewhere (another replica, `feedserve keys`)."""

    CACHE_ROWS = 100_000  # looked-up rows kept (forged ids included); past it the cache starts over

    def __init__(self, store: str | Path) -> None:
        self.store = open_store(store)
        self._rows: dict[str, KeyRow | None] = {}  # by key id; None: no such key
        self._lock = threading.Lock()
        self._epoch = 0  # moves whenever rows are dropped: a lookup that raced a drop is not cached
        self._follower: _KeyFollower | None = None

    def follow(self, poll_s: float = 0.2) -> KeyStore:
        """Start following the store's changes to keys (a serving gateway does; the CLI need not)."""
        self._follower = _KeyFollower(self, poll_s).start()
        return self

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
        self.store.close()

    def create(self, tenant: str, role: str = "write", label: str = "") -> tuple[ApiKey, str]:
        """A new key for `tenant` with `role`; returns its row and the token, which is never shown again."""
        if not _TENANT.match(tenant):
            raise ValueError(f"tenant {tenant!r} is expected to be 1-64 letters, digits, '.', '_' or '-'")
        role = role_of(role)
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = time.time()
        self.store.add_key(key_id, tenant, role, hashlib.sha256(secret.encode()).digest(), now, label)
        self._drop([key_id])
        return ApiKey(key_id, tenant, role, now, None, label), f"fsk_{key_id}_{secret}"

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        keys = [_key(row) for row in self.store.key_rows()]
        return keys if include_revoked else [k for k in keys if k.revoked_at is None]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; False if there is no such live key."""
        revoked = self.store.revoke_key(key_id, time.time()) is not None
        self._drop([key_id])
        return revoked

    def cached(self, token: str) -> tuple[bool, ApiKey | None]:
        """(True, the live key or None) when this token can be judged without the store; (False, None) when
        `verify` must look its id up."""
        match = _TOKEN.match(token)
        if match is None:
            return True, None
        with self._lock:
            if match["id"] not in self._rows:
                return False, None
            row = self._rows[match["id"]]
        return True, _judge(row, match["secret"])

    def verify(self, token: str) -> ApiKey | None:
        """The live key this token is, or None. The secret is compared in constant time."""
        match = _TOKEN.match(token)
        if match is None:
            return None
        key_id = match["id"]
        with self._lock:
            known, row, epoch = key_id in self._rows, self._rows.get(key_id), self._epoch
        if not known:
            row = self.store.key_row(key_id)
            with self._lock:
                if self._epoch == epoch:  # no change to any key was seen meanwhile
                    if len(self._rows) >= self.CACHE_ROWS:
                        self._rows.clear()
                    self._rows[key_id] = row
        return _judge(row, match["secret"])

    def wait_for(self, sequence: int, timeout_s: float) -> bool:
        """Whether this process has dropped every key change up to the keys' `sequence` within `timeout_s` (after
        `follow`)."""
        assert self._follower is not None, "wait_for needs follow()"
        return self._follower.wait_for(sequence, timeout_s)

    def _drop(self, key_ids: Sequence[str]) -> None:
        with self._lock:
            self._epoch += 1
            for key_id in key_ids:
                self._rows.pop(key_id, None)


def _judge(row: KeyRow | None, secret: str) -> ApiKey | None:
    """The key `row` is, if `secret` is its secret and it is live. Compared even without a row, so that timing
    does not tell whether an id exists."""
    digest = hashlib.sha256(secret.encode()).digest()
    stored = row[6] if row is not None else b"\0" * 32
    if not hmac.compare_digest(digest, stored) or row is None or row[4] is not None:
        return None
    return _key(row)


class _KeyFollower(Poller):
    """Drops cached rows of keys that the store says changed (made or revoked), in sequence order."""

    name = "key follower"

    def __init__(self, keys: KeyStore, poll_s: float) -> None:
        super().__init__(poll_s)
        self.keys = keys
        self.applied = keys.store.key_sequence()
        self._changed = threading.Condition()

    def step(self) -> int:
        changed, reached = self.keys.store.keys_changed(self.applied)
        if changed:
            self.keys._drop(changed)
        with self._changed:
            self.applied = max(self.applied, reached)
            self._changed.notify_all()
        return 0

    def wait_for(self, sequence: int, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.applied >= sequence, timeout_s)


def import_key_file(path: Path, keys: KeyStore) -> int:
    """Copy the keys of a keys file made by an older feedserve (SQLite `api_keys`) into the store, keeping their
    ids, secrets' hashes, roles and revocations; ids already in the store are left alone. Returns how many."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key_id, tenant, role, secret_sha256, created_at, revoked_at, label FROM api_keys"
                          ).fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        db.close()
    copied = 0
    for key_id, tenant, role, digest, created_at, revoked_at, label in rows:
        if keys.store.key_row(key_id) is not None:
            continue
        keys.store.add_key(key_id, tenant, role_of(role), bytes(digest), created_at, label)
        if revoked_at is not None:
            keys.store.revoke_key(key_id, revoked_at)
        copied += 1
    return copied
