"""Page cursors sealed with the store's shared key: any replica on the same store opens them, nothing else does, and
each is bound to its tenant, its user and its lifetime. Real stores (a SQLite file; PostgreSQL where the server is
installed) and real AES-GCM."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from catalog import open_store
from errors import InvalidArgument
from feedserve.v1 import gateway_pb2
from gateway.cursors import CURSOR_SECRET, PageCursors

ITEMS = [gateway_pb2.FeedItem(item_id=i + 1, score=1 - i / 1000, title=f"title {i}", category="drama",
                              id=f"ext-{i}", position=20 + i, sources=["interest", "popular"]) for i in range(180)]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where two gateway replicas meet: one SQLite file, or one PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    return request.getfixturevalue("postgres_database")


def _refused(cursors: PageCursors, token: str, user: int = 4, tenant: str = "acme") -> str:
    with pytest.raises(InvalidArgument) as caught:
        cursors.take(token, user, tenant)
    assert caught.value.field == "cursor"
    return str(caught.value)


def test_a_replica_on_the_same_store_opens_another_replicas_cursor(store_url: str) -> None:
    """Two gateways, each with its own connection to one store, read one shared key: a cursor sealed by A opens
    on B with every item intact and in order, and the store's catalog sequence is left alone."""
    a, b = open_store(store_url), open_store(store_url)
    try:
        token = PageCursors.key_from_store(a).put(4, ITEMS, "acme")
        assert PageCursors.key_from_store(b).take(token, 4, "acme") == ITEMS
        assert a.shared_secret(CURSOR_SECRET) == b.shared_secret(CURSOR_SECRET) and a.sequence() == 0
    finally:
        a.close()
        b.close()


def test_a_cursor_from_another_store_is_refused(tmp_path: Path) -> None:
    """Another store's key cannot open a cursor: INVALID_ARGUMENT naming `cursor`, saying it is not this
    deployment's."""
    mine, theirs = open_store(str(tmp_path / "mine.db")), open_store(str(tmp_path / "theirs.db"))
    token = PageCursors.key_from_store(theirs).put(4, ITEMS, "acme")
    assert "not a cursor of this deployment" in _refused(PageCursors.key_from_store(mine), token)


def test_a_cursor_is_bound_to_its_tenant_and_its_user() -> None:
    """acme's cursor for user 4 is refused to globex (naming the tenant) and to user 5 (naming the user); it still
    opens for acme's user 4 afterwards, and twice gives the same page twice."""
    cursors = PageCursors()
    token = cursors.put(4, ITEMS[:3], "acme")
    assert "another tenant" in _refused(cursors, token, tenant="globex")
    assert "another user" in _refused(cursors, token, user=5)
    assert cursors.take(token, 4, "acme") == cursors.take(token, 4, "acme") == ITEMS[:3]


def test_forged_altered_and_cut_cursors_are_refused() -> None:
    """Garbage, a cursor with any one byte flipped (header or sealed part), and a cursor cut short are all
    INVALID_ARGUMENT naming `cursor`; none raises anything else."""
    cursors = PageCursors()
    token = cursors.put(4, ITEMS[:5], "acme")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for bad in ("forged", "", "!!!!", token[:-10], token[:20]):
        _refused(cursors, bad)
    for at in range(0, len(raw), 7):
        flipped = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:]
        _refused(cursors, base64.urlsafe_b64encode(flipped).decode())


def test_a_cursor_expires_by_the_wall_clock() -> None:
    """A cursor opens until its lifetime has passed on the wall clock (which replicas on other hosts share), and
    is refused after, saying so."""
    now = [1_000_000.0]
    cursors = PageCursors(ttl_s=600, clock=lambda: now[0])
    token = cursors.put(4, ITEMS[:2], "acme")
    now[0] += 600
    assert cursors.take(token, 4, "acme") == ITEMS[:2]
    now[0] += 1
    assert "expired" in _refused(cursors, token)
