"""API keys in the store: every replica sees a key made or revoked elsewhere, a key already seen is judged without
the store, a first look-up runs off the event loop, and an older release's keys file is carried over. Real stores
(a SQLite file; PostgreSQL where the server is installed), real gRPC for the door."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from feedserve.v1 import gateway_pb2
from gateway.keys import KeyStore, import_key_file
from tests.stack import running_stack


@pytest.fixture(params=["sqlite", "postgresql"])
def keys_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where two replicas' KeyStores meet: one SQLite file, or one PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    return request.getfixturevalue("postgres_database")


def test_a_key_revoked_on_one_replica_is_refused_by_another_once_it_follows(keys_url: str) -> None:
    """Replica B has judged a key live (and keeps that row); replica A revokes it; B refuses it as soon as its
    follower reaches the revocation's sequence, without a restart. A key made on A is accepted by B at once
    (B never cached its id). Keys leave the catalog's sequence alone."""
    a, b = KeyStore(keys_url), KeyStore(keys_url).follow()
    try:
        made, token = a.create("acme", "read")
        assert b.verify(token) == made and b.cached(token) == (True, made)
        assert a.revoke(made.key_id)
        assert b.wait_for(a.store.key_sequence(), timeout_s=10)
        assert b.cached(token) == (False, None) and b.verify(token) is None
        _, second = a.create("globex")
        assert b.verify(second) is not None and a.store.sequence() == 0
    finally:
        a.close()
        b.close()


def test_a_forged_id_is_remembered_as_absent_until_a_key_of_that_id_is_made(keys_url: str) -> None:
    """A token whose id no key has is looked up once, then judged from the cache (still refused); a forged
    token of a malformed shape never reaches the store."""
    keys = KeyStore(keys_url).follow()
    try:
        forged = "fsk_0123456789ab_" + "A" * 43
        assert keys.cached(forged) == (False, None)
        assert keys.verify(forged) is None and keys.cached(forged) == (True, None)
        assert keys.cached("not a key") == (True, None)
    finally:
        keys.close()


def test_the_door_looks_a_new_key_up_off_the_event_loop(catalog, manifest, tmp_path, run) -> None:
    """The first call with a key reads the store on an executor thread, never on the event loop's; the second is
    judged from the cache (no look-up at all)."""
    keys = KeyStore(tmp_path / "keys.db")
    _, token = keys.create("acme")
    looked_up: list[str] = []
    verify = keys.verify

    def recording(token: str):
        looked_up.append(threading.current_thread().name)
        return verify(token)

    keys.verify = recording  # type: ignore[method-assign]

    async def body() -> None:
        async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
            loop_thread = threading.current_thread().name
            for _ in range(2):
                reply = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=1, k=3),
                                                 metadata=(("authorization", f"Bearer {token}"),))
                assert len(reply.items) == 3
            assert len(looked_up) == 1 and looked_up[0] != loop_thread

    try:
        run(body())
    finally:
        keys.close()


def test_an_older_keys_file_is_copied_into_the_store_once(tmp_path: Path) -> None:
    """A keys.db of an older release (SQLite api_keys, role "tenant"): its live key works from the store as a write
    key, its revoked key stays revoked, and copying again adds nothing."""
    old = KeyStore(tmp_path / "scratch.db")
    live, live_token = old.create("acme")
    gone, gone_token = old.create("globex", "admin")
    rows = {r[0]: r for r in old.store.key_rows()}
    old.close()
    former = tmp_path / "keys.db"
    db = sqlite3.connect(former)
    db.execute("CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL, "
               "secret_sha256 BLOB NOT NULL, created_at REAL NOT NULL, revoked_at REAL, label TEXT NOT NULL DEFAULT '')")
    db.execute("INSERT INTO api_keys VALUES (?, ?, 'tenant', ?, ?, NULL, '')",
               (live.key_id, "acme", rows[live.key_id][6], live.created_at))
    db.execute("INSERT INTO api_keys VALUES (?, ?, 'admin', ?, ?, ?, '')",
               (gone.key_id, "globex", rows[gone.key_id][6], gone.created_at, gone.created_at + 1))
    db.commit()
    db.close()
    keys = KeyStore(tmp_path / "catalog.db")
    try:
        assert import_key_file(former, keys) == 2 and import_key_file(former, keys) == 0
        carried = keys.verify(live_token)
        assert carried is not None and (carried.tenant, carried.role) == ("acme", "write")
        assert keys.verify(gone_token) is None
        assert [k.key_id for k in keys.list(include_revoked=False)] == [live.key_id]
    finally:
        keys.close()


def test_a_gateway_without_a_store_or_no_auth_refuses_to_start() -> None:
    """Keys live in the store: with neither --store nor --keys (and no --no-auth), python -m gateway exits with
    a message saying so."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "gateway", "--ranker", "127.0.0.1:1"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "FEEDSERVE_STORE": "", "FEEDSERVE_CONFIG": ""})
    assert done.returncode == 2 and "the API keys live in the store" in done.stderr
