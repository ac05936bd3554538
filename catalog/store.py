"""The store, the source of truth for items, users, the id map and the event log: SQLite or PostgreSQL behind one class.

Every change takes the next number of one catalog sequence, allocated inside the writing transaction while
that transaction holds the store's single write lock (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's transaction
advisory lock). So sequence order is commit order, and a follower that has read everything up to N never
later finds a change numbered below N. A write returns only after its commit, which is durable: SQLite in
WAL mode with `synchronous=FULL`, PostgreSQL with its default `synchronous_commit=on`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from catalog.artifacts import ARTIFACTS_DDL, StoredArtifacts
from catalog.keys import KEYS_DDL, StoredKeys
from catalog.online_rows import ONLINE_DDL, StoredOnlineCounts
from catalog.records import Event, Item, StoredItem, User
from catalog.registry_rows import REGISTRY_DDL, StoredRegistry
from catalog.spaces import LearnedSpaces, served_vector
from errors import InvalidArgument, NotFound, Unavailable

__all__ = ["Store", "open_store", "ITEM", "USER", "content_key", "content_text"]

ITEM, USER = 1, 2  # id map kinds
_LOCK_KEY = 0x66656564  # PostgreSQL advisory lock that serialises writers ("feed"), in the public schema
_CHUNK = 500  # ids per IN (...) list: well under SQLite's variable limit

_DDL = """
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS id_map (kind SMALLINT NOT NULL, external TEXT NOT NULL, id BIGINT NOT NULL,
    PRIMARY KEY (kind, external));
CREATE TABLE IF NOT EXISTS items (id BIGINT PRIMARY KEY, external TEXT NOT NULL, title TEXT NOT NULL,
    body TEXT NOT NULL, categories TEXT NOT NULL, tags TEXT NOT NULL, published BIGINT NOT NULL,
    attributes TEXT NOT NULL, hidden SMALLINT NOT NULL, deleted SMALLINT NOT NULL, seq BIGINT NOT NULL,
    content_key TEXT NOT NULL, vector {blob});
CREATE INDEX IF NOT EXISTS items_by_seq ON items (seq);
CREATE INDEX IF NOT EXISTS items_by_content ON items (content_key);
CREATE INDEX IF NOT EXISTS items_pending ON items (content_key) WHERE vector IS NULL AND deleted = 0;
CREATE TABLE IF NOT EXISTS content_vectors (content_key TEXT PRIMARY KEY, vector {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, external TEXT NOT NULL, attributes TEXT NOT NULL,
    seq BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS users_by_seq ON users (seq);
CREATE TABLE IF NOT EXISTS events (seq BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, item_id BIGINT NOT NULL,
    event SMALLINT NOT NULL, ts BIGINT NOT NULL, value DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id);
CREATE TABLE IF NOT EXISTS spaces (id BIGINT PRIMARY KEY, model TEXT NOT NULL, projection {blob} NOT NULL,
    trained_to BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS learned_items (space BIGINT NOT NULL, item_id BIGINT NOT NULL, vector {blob} NOT NULL,
    PRIMARY KEY (space, item_id));
CREATE TABLE IF NOT EXISTS learned_users (space BIGINT NOT NULL, user_id BIGINT NOT NULL, vector {blob} NOT NULL,
    PRIMARY KEY (space, user_id));
CREATE INDEX IF NOT EXISTS learned_users_by_user ON learned_users (user_id);
CREATE TABLE IF NOT EXISTS user_tombstones (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS user_tombstones_by_seq ON user_tombstones (seq);
"""
_COUNTERS = ("seq", "item", "user", "space", "active_space", "keys", "registry")


class Store(LearnedSpaces, StoredKeys, StoredRegistry, StoredOnlineCounts, StoredArtifacts):
    """One connection, used by one thread at a time; every method is one transaction.

    `dialect` is 'sqlite' or 'postgresql'; SQL is written once with `?` placeholders.
    """

    def __init__(self, connect: Callable[[], Any], dialect: str, name: str, errors: tuple[type[BaseException], ...]) -> None:
        self.dialect, self.name, self._errors = dialect, name, errors
        self._connect = connect
        self._lock = threading.Lock()
        self._conn: Any = None
        self._projections: dict[int, np.ndarray] = {}
        self._lock_key = _LOCK_KEY
        self.schema = ""  # PostgreSQL's schema for the tables (SQLite: one catalog per file)
        with self._transaction() as cur:
            if dialect == "postgresql":
                self.schema = _ensure_schema(cur)
                self._lock_key = _lock_key(self.schema)
            blob = "BLOB" if dialect == "sqlite" else "BYTEA"
            for statement in filter(str.strip, (_DDL + KEYS_DDL + REGISTRY_DDL + ONLINE_DDL + ARTIFACTS_DDL).format(blob=blob).split(";")):
                cur.execute(statement)
            for counter in _COUNTERS:
                cur.execute(self._sql("INSERT INTO counters (name, value) VALUES (?, 0) ON CONFLICT (name) DO NOTHING"),
                            (counter,))

    # -- plumbing ---------------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text if self.dialect == "sqlite" else text.replace("?", "%s")

    @contextmanager
    def _transaction(self, write: bool = True, serial: bool = True) -> Iterator[Any]:
        """One transaction under the writer lock; a failure to reach the store is UNAVAILABLE naming it. A write
        that is not `serial` (rows only its writer touches) does not take PostgreSQL's catalog lock."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                cur = self._conn.cursor()
                if self.dialect == "sqlite":
                    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                elif write and serial:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                try:
                    yield cur
                except BaseException:
                    self._conn.rollback()
                    raise
                self._conn.commit()
            except self._errors as exc:
                self._drop()
                raise Unavailable(f"store ({self.name})", str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__) from exc

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(*self._errors):  # already broken: the next call reconnects
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _next(self, cur: Any, counter: str, n: int) -> int:
        """Reserve `n` numbers of a counter; returns the first. Inside a write transaction only."""
        cur.execute(self._sql("UPDATE counters SET value = value + ? WHERE name = ? RETURNING value"), (n, counter))
        return int(cur.fetchone()[0]) - n + 1

    def _ids(self, cur: Any, kind: int, externals: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(externals))
        for start in range(0, len(unique), _CHUNK):
            part = unique[start:start + _CHUNK]
            marks = ",".join("?" * len(part))
            cur.execute(self._sql(f"SELECT external, id FROM id_map WHERE kind = ? AND external IN ({marks})"), (kind, *part))
            found.update((e, int(i)) for e, i in cur.fetchall())
        return found

    def _assign(self, cur: Any, kind: int, externals: Sequence[str]) -> dict[str, int]:
        """Dense ids for `externals`, allocating the next ones (never reused) for ids not yet mapped."""
        ids = self._ids(cur, kind, externals)
        new = [e for e in dict.fromkeys(externals) if e not in ids]
        if new:
            first = self._next(cur, "item" if kind == ITEM else "user", len(new))
            rows = [(kind, e, first + i) for i, e in enumerate(new)]
            cur.executemany(self._sql("INSERT INTO id_map (kind, external, id) VALUES (?, ?, ?)"), rows)
            ids.update((e, i) for _, e, i in rows)
        return ids

    # -- writes: each returns the catalog sequence it reached -------------------------------------

    def upsert_items(self, items: Sequence[Item]) -> int:
        """Insert or replace items (a re-upsert keeps the item's id and revives a deleted one)."""
        with self._transaction() as cur:
            ids = self._assign(cur, ITEM, [i.external_id for i in items])
            keys = [content_key(i) for i in items]
            known = self._content_vectors(cur, keys)
            first = self._next(cur, "seq", len(items))
            rows = [(ids[i.external_id], i.external_id, i.title, i.text, json.dumps(i.categories), json.dumps(i.tags),
                     int(i.published), json.dumps(i.attributes), int(i.hidden), 0, first + n, key, known.get(key))
                    for n, (i, key) in enumerate(zip(items, keys))]
            cur.executemany(self._sql(
                "INSERT INTO items (id, external, title, body, categories, tags, published, attributes, hidden, deleted, seq,"
                " content_key, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " title = excluded.title, body = excluded.body, categories = excluded.categories, tags = excluded.tags,"
                " published = excluded.published, attributes = excluded.attributes, hidden = excluded.hidden,"
                " deleted = 0, seq = excluded.seq, content_key = excluded.content_key, vector = excluded.vector"), rows)
            return first + len(items) - 1

    def _content_vectors(self, cur: Any, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            part = unique[start:start + _CHUNK]
            cur.execute(self._sql(f"SELECT content_key, vector FROM content_vectors WHERE content_key IN"
                                  f" ({','.join('?' * len(part))})"), part)
            found.update((k, bytes(v)) for k, v in cur.fetchall())
        return found

    def pending_content(self, limit: int = 256) -> list[tuple[str, str]]:
        """Up to `limit` distinct (content key, text to encode) of live items that have no content vector yet."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT content_key, MIN(title), MIN(body), MIN(categories) FROM items"
                                  " WHERE vector IS NULL AND deleted = 0 GROUP BY content_key ORDER BY MIN(seq) LIMIT ?"),
                        (limit,))
            return [(key, content_text(title, body, json.loads(categories))) for key, title, body, categories in cur.fetchall()]

    def pending_count(self) -> int:
        """Live items still waiting for their content vector."""
        with self._transaction(write=False) as cur:
            cur.execute("SELECT count(*) FROM items WHERE vector IS NULL AND deleted = 0")
            return int(cur.fetchone()[0])

    def set_content_vectors(self, vectors: Mapping[str, np.ndarray]) -> int:
        """Store content vectors by content key and give them to every item with that content that lacks one; each
        such item takes a new sequence (the change feed carries it again, now retrievable). Returns that sequence."""
        with self._transaction() as cur:
            blobs = {key: np.ascontiguousarray(v, np.float32).tobytes() for key, v in vectors.items()}
            cur.executemany(self._sql("INSERT INTO content_vectors (content_key, vector) VALUES (?, ?)"
                                      " ON CONFLICT (content_key) DO NOTHING"), list(blobs.items()))
            waiting: list[tuple[int, str]] = []
            keys = list(blobs)
            for start in range(0, len(keys), _CHUNK):
                part = keys[start:start + _CHUNK]
                cur.execute(self._sql(f"SELECT id, content_key FROM items WHERE vector IS NULL AND content_key IN"
                                      f" ({','.join('?' * len(part))})"), part)
                waiting += [(int(i), k) for i, k in cur.fetchall()]
            if waiting:
                waiting.sort()
                first = self._next(cur, "seq", len(waiting))
                cur.executemany(self._sql("UPDATE items SET vector = ?, seq = ? WHERE id = ?"),
                                [(blobs[key], first + n, item) for n, (item, key) in enumerate(waiting)])
            return self._sequence(cur)

    def delete_items(self, externals: Sequence[str]) -> int:
        """Mark items deleted (a tombstone the change feed carries); unknown or already deleted ids are skipped."""
        with self._transaction() as cur:
            live = sorted(self._live(cur, list(self._ids(cur, ITEM, externals).values())))
            if live:
                first = self._next(cur, "seq", len(live))
                cur.executemany(self._sql("UPDATE items SET deleted = 1, seq = ? WHERE id = ?"),
                                [(first + n, i) for n, i in enumerate(live)])
            return self._sequence(cur)

    def upsert_users(self, users: Sequence[User]) -> int:
        with self._transaction() as cur:
            ids = self._assign(cur, USER, [u.external_id for u in users])
            first = self._next(cur, "seq", len(users))
            rows = [(ids[u.external_id], u.external_id, json.dumps(u.attributes), first + n) for n, u in enumerate(users)]
            cur.executemany(self._sql(
                "INSERT INTO users (id, external, attributes, seq) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET attributes = excluded.attributes, seq = excluded.seq"), rows)
            return first + len(users) - 1

    def delete_user(self, external: str) -> tuple[int, int | None]:
        """Forget a user: their attributes, their events, their learned vectors and their id mapping.
        Returns (sequence, the id they had)."""
        with self._transaction() as cur:
            user = self._ids(cur, USER, [external]).get(external)
            if user is not None:
                seq = self._next(cur, "seq", 1)
                for table, column in (("events", "user_id"), ("users", "id"), ("learned_users", "user_id")):
                    cur.execute(self._sql(f"DELETE FROM {table} WHERE {column} = ?"), (user,))
                cur.execute(self._sql("DELETE FROM id_map WHERE kind = ? AND id = ?"), (USER, user))
                # only the dense number stays, so that followers drop what they derived (ids are never reused)
                cur.execute(self._sql("INSERT INTO user_tombstones (id, seq) VALUES (?, ?)"), (user, seq))
            return self._sequence(cur), user

    def user_deleted(self, user: int) -> bool:
        """Whether the user numbered `user` was deleted (ids are never reused: a deleted number stays deleted)."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT 1 FROM user_tombstones WHERE id = ?"), (user,))
            return cur.fetchone() is not None

    def record_events(self, events: Sequence[Event], now: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Append events; a user seen for the first time gets an id. An unknown or deleted item is NOT_FOUND naming
        its row, and nothing is written. Returns (sequence, user ids, item ids), one per event."""
        with self._transaction() as cur:
            items = self._ids(cur, ITEM, [e.item for e in events])
            live = set(self._live(cur, list(items.values())))
            for row, event in enumerate(events):
                if items.get(event.item) not in live:
                    raise NotFound(f"events[{row}].item: unknown item {event.item!r}")
            users = self._assign(cur, USER, [e.user for e in events])
            known = set(self._existing_users(cur, list(users.values())))
            fresh = {e: i for e, i in users.items() if i not in known}
            first = self._next(cur, "seq", len(events) + len(fresh))
            cur.executemany(self._sql("INSERT INTO users (id, external, attributes, seq) VALUES (?, ?, '{}', ?)"),
                            [(i, e, first + len(events) + n) for n, (e, i) in enumerate(fresh.items())])
            user_ids = np.array([users[e.user] for e in events], np.int64)
            item_ids = np.array([items[e.item] for e in events], np.int64)
            cur.executemany(self._sql("INSERT INTO events (seq, user_id, item_id, event, ts, value) VALUES (?, ?, ?, ?, ?, ?)"),
                            [(first + n, int(u), int(i), e.event, e.timestamp or now, None if math.isnan(e.value) else e.value)
                             for n, (e, u, i) in enumerate(zip(events, user_ids.tolist(), item_ids.tolist()))])
            return first + len(events) + len(fresh) - 1, user_ids, item_ids

    def _present(self, cur: Any, query: str, ids: list[int]) -> list[int]:
        """The ids that `query` (ending in `id IN`) finds, asked in chunks."""
        out: list[int] = []
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            cur.execute(self._sql(f"{query} ({','.join('?' * len(part))})"), part)
            out += [int(r[0]) for r in cur.fetchall()]
        return out

    def _live(self, cur: Any, ids: list[int]) -> list[int]:
        return self._present(cur, "SELECT id FROM items WHERE deleted = 0 AND id IN", ids)

    def _existing_users(self, cur: Any, ids: list[int]) -> list[int]:
        return self._present(cur, "SELECT id FROM users WHERE id IN", ids)

    # -- reads --------------------------------------------------------------------------------------

    def _sequence(self, cur: Any) -> int:
        cur.execute("SELECT value FROM counters WHERE name = 'seq'")
        return int(cur.fetchone()[0])

    def sequence(self) -> int:
        """The last sequence number any committed change took."""
        with self._transaction(write=False) as cur:
            return self._sequence(cur)

    def changes(self, after: int, limit: int = 10_000) -> tuple[list[StoredItem], int]:
        """The change feed for items: every item whose last change is numbered in (after, reached], in sequence
        order, tombstones included, and `reached`. An item changed twice appears once, at its latest state.
        Each carries its content vector and its served vector (`served_vector`).

        The committed sequence is read first: every change numbered at or below it has committed (numbers are
        taken and committed under the write lock), so the item query that follows sees all of them."""
        with self._transaction(write=False) as cur:
            reached = self._sequence(cur)
            space = self._active_space(cur)
            projection = self._projection(cur, space) if space else None
            cur.execute(self._sql(
                "SELECT id, external, title, body, categories, tags, published, attributes, hidden, deleted, seq,"
                " items.vector, learned_items.vector FROM items LEFT JOIN learned_items ON learned_items.space = ?"
                " AND learned_items.item_id = items.id WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"),
                (space, after, reached, limit))
            items = []
            for r in cur.fetchall():
                content = None if r[11] is None else np.frombuffer(bytes(r[11]), np.float32)
                items.append(StoredItem(
                    external_id=r[1], title=r[2], text=r[3], categories=json.loads(r[4]), tags=json.loads(r[5]),
                    published=int(r[6]), attributes=json.loads(r[7]), hidden=bool(r[8]), id=int(r[0]), deleted=bool(r[9]),
                    seq=int(r[10]), vector=served_vector(content, None if r[12] is None else bytes(r[12]), projection),
                    content=content, space=space))
        if len(items) == limit:  # more may follow: only what was delivered is reached
            reached = items[-1].seq
        return items, max(reached, after)

    def event_rows(self, after: int, until: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(users, items, events, timestamps) of every event numbered in (after, until], in sequence order: what
        popularity, `seen` and users' recent history follow."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT user_id, item_id, event, ts FROM events WHERE seq > ? AND seq <= ? ORDER BY seq"),
                        (after, until))
            rows = np.array(cur.fetchall(), np.int64).reshape(-1, 4)
        return rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]

    def users_changed(self, after: int, until: int) -> list[tuple[int, dict[str, Any]]]:
        """(id, attributes) of every user whose row changed in (after, until]."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT id, attributes FROM users WHERE seq > ? AND seq <= ? ORDER BY seq"), (after, until))
            return [(int(i), json.loads(a)) for i, a in cur.fetchall()]

    def external_ids(self) -> tuple[dict[int, str], dict[int, str]]:
        """Every mapped id's external id: (users, items), each {dense id: external id}."""
        with self._transaction(write=False) as cur:
            cur.execute("SELECT kind, id, external FROM id_map")
            rows = cur.fetchall()
        return ({int(i): e for k, i, e in rows if k == USER}, {int(i): e for k, i, e in rows if k == ITEM})

    def users_deleted(self, after: int, until: int) -> list[int]:
        """Ids of users deleted in (after, until]: followers forget what they derived from them."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT id FROM user_tombstones WHERE seq > ? AND seq <= ? ORDER BY seq"), (after, until))
            return [int(r[0]) for r in cur.fetchall()]

    def users(self, externals: Sequence[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """Known users among `externals`: external id -> (id, attributes)."""
        with self._transaction(write=False) as cur:
            ids = self._ids(cur, USER, externals)
            out: dict[str, tuple[int, dict[str, Any]]] = {}
            for external, user in ids.items():
                cur.execute(self._sql("SELECT attributes FROM users WHERE id = ?"), (user,))
                row = cur.fetchone()
                out[external] = (user, json.loads(row[0]) if row else {})
            return out

    def resolve(self, kind: int, externals: Sequence[str]) -> np.ndarray:
        """Dense ids of `externals` (0 where unknown)."""
        with self._transaction(write=False) as cur:
            ids = self._ids(cur, kind, externals)
        return np.array([ids.get(e, 0) for e in externals], np.int64)

    def history(self, user: int, limit: int = 1_000) -> np.ndarray:
        """The items a user has interacted with, most recent first (distinct)."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT item_id FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?"), (user, limit))
            return np.array(list(dict.fromkeys(int(r[0]) for r in cur.fetchall())), np.int64)

    def events(self, after: int = 0, until: int | None = None) -> dict[str, np.ndarray]:
        """The event log in sequence order as arrays: seq, user, item, event, timestamp, value (NaN when absent)."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT seq, user_id, item_id, event, ts, value FROM events WHERE seq > ? AND seq <= ?"
                                  " ORDER BY seq"), (after, until if until is not None else 2**62))
            rows = cur.fetchall()
        data = np.array([(r[0], r[1], r[2], r[3], r[4], math.nan if r[5] is None else r[5]) for r in rows],
                        np.float64).reshape(-1, 6)
        return {"seq": data[:, 0].astype(np.int64), "user": data[:, 1].astype(np.int64), "item": data[:, 2].astype(np.int64),
                "event": data[:, 3].astype(np.int8), "timestamp": data[:, 4].astype(np.int64), "value": data[:, 5]}

    def categories(self, limit: int = 256) -> list[str]:
        """The catalog's categories, most used first (items' first category): what a user's interests are named by."""
        with self._transaction(write=False) as cur:
            cur.execute("SELECT categories FROM items WHERE deleted = 0")
            counts: dict[str, int] = {}
            for (text,) in cur.fetchall():
                for category in json.loads(text)[:1]:
                    counts[category] = counts.get(category, 0) + 1
        return sorted(counts, key=lambda c: -counts[c])[:limit]

    def item_texts(self, ids: Sequence[int]) -> dict[int, tuple[str, str, list[str]]]:
        """Title, body and categories of each live, shown item among `ids`; deleted, hidden and unknown ids are
        absent alike (a hidden item's text is nobody's to read through generation)."""
        found: dict[int, tuple[str, str, list[str]]] = {}
        with self._transaction(write=False) as cur:
            for start in range(0, len(ids), _CHUNK):
                part = [int(i) for i in ids[start:start + _CHUNK]]
                cur.execute(self._sql(f"SELECT id, title, body, categories FROM items WHERE deleted = 0 AND hidden = 0 AND id IN"
                                      f" ({','.join('?' * len(part))})"), part)
                found.update((int(i), (t, b, json.loads(c))) for i, t, b, c in cur.fetchall())
        return found

    def copy_to(self, target: Store, events: np.ndarray | None = None) -> None:
        """Copy this catalog, ids and sequences as they are, into an empty `target` store: everything, or (for an
        evaluation's training part) only the events whose sequence numbers are in `events`, and no learned space
        (what was learned from the rest must not reach it). One read transaction."""
        tables = {"counters": ("name", "value"), "id_map": ("kind", "external", "id"),
                  "items": ("id", "external", "title", "body", "categories", "tags", "published", "attributes", "hidden",
                            "deleted", "seq", "content_key", "vector"),
                  "content_vectors": ("content_key", "vector"), "users": ("id", "external", "attributes", "seq"),
                  "events": ("seq", "user_id", "item_id", "event", "ts", "value"),
                  "spaces": ("id", "model", "projection", "trained_to"), "learned_items": ("space", "item_id", "vector"),
                  "learned_users": ("space", "user_id", "vector"), "user_tombstones": ("id", "seq")}
        keep = None if events is None else set(np.asarray(events, np.int64).tolist())
        with self._transaction(write=False) as cur, target._transaction() as out:
            for table, columns in tables.items():
                names = ", ".join(columns)
                cur.execute(f"SELECT {names} FROM {table}")
                rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in cur.fetchall()]
                if keep is not None and table == "events":
                    rows = [r for r in rows if r[0] in keep]
                if keep is not None and table in ("spaces", "learned_items", "learned_users"):
                    continue
                if keep is not None and table == "counters":
                    rows = [(n, 0 if n == "active_space" else v) for n, v in rows]
                if table == "counters":
                    out.executemany(target._sql("UPDATE counters SET value = ? WHERE name = ?"), [(v, n) for n, v in rows])
                    continue
                out.executemany(target._sql(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"), rows)

    def counts(self) -> dict[str, int]:
        """Rows per table: live items, deleted items, users, events."""
        with self._transaction(write=False) as cur:
            out = {}
            for key, query in (("items", "SELECT count(*) FROM items WHERE deleted = 0"),
                               ("deleted_items", "SELECT count(*) FROM items WHERE deleted = 1"),
                               ("users", "SELECT count(*) FROM users"), ("events", "SELECT count(*) FROM events")):
                cur.execute(query)
                out[key] = int(cur.fetchone()[0])
            return out


def content_text(title: str, text: str, categories: Sequence[str]) -> str:
    """What an item's content vector is computed from: its title, its text and its categories."""
    parts = [title.strip(), text.strip(), ", ".join(categories)]
    return ". ".join(p for p in parts if p)


def content_key(item: Item) -> str:
    """Items with the same title, text and categories share one content vector: it is encoded once."""
    return hashlib.sha256(content_text(item.title, item.text, item.categories).encode()).hexdigest()[:32]


def _sqlite(path: Path) -> Store:
    path.parent.mkdir(parents=True, exist_ok=True)

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # the WAL is fsynced at every commit: an acknowledged write survives power loss
        return conn

    return Store(lambda: _SqliteConnection(connect()), "sqlite", f"sqlite {path}", (sqlite3.OperationalError, sqlite3.DatabaseError))


class _SqliteConnection:
    """sqlite3 in autocommit mode with our own BEGIN: commit and rollback issue the statements."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def cursor(self) -> sqlite3.Cursor:
        return self.conn.cursor()

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


def _ensure_schema(cur: Any) -> str:
    """The schema this connection's tables live in: the first of its search_path (a URL's
    `?options=-csearch_path=NAME`), created when missing, so that products on one PostgreSQL database stay apart."""
    cur.execute("SELECT current_schema()")
    schema = cur.fetchone()[0]
    if schema is None:  # search_path names no schema that exists yet
        from psycopg import sql

        cur.execute("SHOW search_path")
        named = [part.strip().strip('"') for part in cur.fetchone()[0].split(",")]
        wanted = next((n for n in named if n and n != "$user"), "")
        if not wanted:
            raise InvalidArgument("store", "its search_path names no schema to keep the catalog in")
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(wanted)))
        cur.execute("SELECT current_schema()")
        schema = cur.fetchone()[0]
    return str(schema)


def _lock_key(schema: str) -> int:
    """The writers' advisory lock for one schema: the catalogs of two schemas never wait for each other."""
    if schema == "public":
        return _LOCK_KEY  # what every release before schemas took
    return _LOCK_KEY ^ ((zlib.crc32(schema.encode()) & 0x7FFFFFFF) << 32)


def _postgres(url: str) -> Store:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a core dependency
        raise Unavailable("store (postgresql)", f"psycopg is not installed: {exc}") from None
    shown = url.split("@")[-1]  # never echo a password
    return Store(lambda: psycopg.connect(url, connect_timeout=5), "postgresql", f"postgresql {shown}",
                 (psycopg.OperationalError, psycopg.InterfaceError))


STORE_ENV = "FEEDSERVE_STORE"  # where services read the store's URL when --store is not given (never in argv)


def store_default() -> str:
    """--store's default: $FEEDSERVE_STORE, so a URL with a password need not be on a command line (`ps`)."""
    return os.environ.get(STORE_ENV, "")


def redact(url: str | Path) -> str:
    """The store's URL fit to print or log: a password in it becomes ***."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", str(url))


def open_store(url: str | Path) -> Store:
    """`postgresql://...` (or `postgres://`) for PostgreSQL; a path or `sqlite:///path` for SQLite."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return _postgres(text)
    if text.startswith("sqlite://"):
        text = text.removeprefix("sqlite://")
    if not text:
        raise InvalidArgument("store", "expected a path or a postgresql:// URL")
    return _sqlite(Path(text))
