"""The store suite, run on SQLite and on a real PostgreSQL server: ids, sequences, tombstones, events, forgetting."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from catalog import ITEM, USER, ChangeFollower, Event, Item, Store, User, open_store
from errors import NotFound, Unavailable

LIKE, CLICK = 3, 2


class TestIdsAndSequence:
    def test_items_get_dense_ids_in_arrival_order(self, store: Store) -> None:
        """New external ids map to 1, 2, 3...; the id map resolves them and reports 0 for unknown ids."""
        store.upsert_items([Item("m-10"), Item("m-20"), Item("m-30")])
        assert store.resolve(ITEM, ["m-20", "m-10", "nope", "m-30"]).tolist() == [2, 1, 0, 3]

    def test_every_write_returns_a_higher_sequence(self, store: Store) -> None:
        """Acknowledgements carry the sequence reached, and it only grows."""
        seqs = [store.upsert_items([Item("a")]), store.upsert_users([User("u")]),
                store.record_events([Event("u", "a", LIKE)], now=100)[0], store.upsert_items([Item("a", title="again")])]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert store.sequence() == seqs[-1]

    def test_reupsert_keeps_the_id_and_moves_the_item_forward_in_the_feed(self, store: Store) -> None:
        """An item changed twice appears once in the change feed, at its latest state and sequence."""
        store.upsert_items([Item("a", title="one"), Item("b")])
        seq = store.upsert_items([Item("a", title="two", categories=["drama"], attributes={"x": 1.0})])
        items, reached = store.changes(0)
        assert [i.external_id for i in items] == ["b", "a"]
        assert items[1].id == 1 and items[1].title == "two" and items[1].categories == ["drama"] and items[1].seq == seq
        assert reached == seq


class TestChangeFeed:
    def test_a_follower_sees_changes_after_its_sequence_only(self, store: Store) -> None:
        """Reading from a sequence delivers only later changes, so a restarted follower resumes without a reload."""
        first = store.upsert_items([Item("a"), Item("b")])
        store.upsert_items([Item("c")])
        items, _ = store.changes(first)
        assert [i.external_id for i in items] == ["c"]

    def test_the_feed_pages_without_skipping(self, store: Store) -> None:
        """With a small page size, `reached` stops at the last delivered change and the next page continues."""
        store.upsert_items([Item(f"i{n}") for n in range(7)])
        seen, after = [], 0
        while True:
            items, after_next = store.changes(after, limit=3)
            seen += [i.external_id for i in items]
            if after_next == after:
                break
            after = after_next
        assert seen == [f"i{n}" for n in range(7)]

    def test_deletes_are_tombstones_and_hidden_items_are_not_servable(self, store: Store) -> None:
        """A deleted item comes through the feed once more, marked deleted; a hidden one comes through unservable."""
        store.upsert_items([Item("a"), Item("b", hidden=True), Item("c")])
        after = store.sequence()
        store.delete_items(["a"])
        items, _ = store.changes(after)
        assert [(i.external_id, i.deleted) for i in items] == [("a", True)]
        everything = {i.external_id: i.servable for i in store.changes(0)[0]}
        assert everything == {"a": False, "b": False, "c": True}

    def test_item_texts_leave_hidden_deleted_and_unknown_items_out_alike(self, store: Store) -> None:
        """What generation may read of items: a shown item's title, body and categories; a hidden, a deleted and
        a never-known id are all simply absent, so no answer tells them apart."""
        store.upsert_items([Item("a", title="A", text="alpha"), Item("b", title="B", hidden=True), Item("c", title="C")])
        store.delete_items(["c"])
        ids = store.resolve(ITEM, ["a", "b", "c"]).tolist()
        assert store.item_texts([*ids, 10**9]) == {ids[0]: ("A", "alpha", [])}

    def test_deleting_unknown_items_succeeds_and_changes_nothing(self, store: Store) -> None:
        """Deletes are idempotent: unknown or already deleted ids are skipped, and no sequence is taken."""
        store.upsert_items([Item("a")])
        store.delete_items(["a"])
        before = store.sequence()
        assert store.delete_items(["a", "never-seen"]) == before
        assert store.changes(before)[0] == []

    def test_a_deleted_item_comes_back_with_its_old_id(self, store: Store) -> None:
        """Upserting a deleted item revives it under the same dense id."""
        store.upsert_items([Item("a"), Item("b")])
        store.delete_items(["a"])
        store.upsert_items([Item("a", title="back")])
        latest = {i.external_id: i for i in store.changes(0)[0]}
        assert latest["a"].id == 1 and latest["a"].servable

    def test_follower_applies_in_order_and_wait_for_reports_the_sequence(self, store: Store) -> None:
        """The follower hands every change to its callback and `wait_for` returns once the sequence is applied."""
        got: list[str] = []
        follower = ChangeFollower(store, lambda items, reached: got.extend(i.external_id for i in items), batch=2)
        seq = store.upsert_items([Item(f"i{n}") for n in range(5)])
        assert not follower.wait_for(seq, 0)
        assert follower.poll() == 5
        assert follower.wait_for(seq, 0) and got == [f"i{n}" for n in range(5)]


class TestEvents:
    def test_events_create_users_and_land_in_the_log(self, store: Store) -> None:
        """A user first seen in an event gets an id and a row; events keep their timestamps and values."""
        store.upsert_items([Item("a"), Item("b")])
        seq, users, items = store.record_events(
            [Event("u1", "a", LIKE, timestamp=50, value=4.5), Event("u2", "b", CLICK), Event("u1", "b", CLICK)], now=99)
        assert users.tolist() == [1, 2, 1] and items.tolist() == [1, 2, 2]
        log = store.events()
        assert log["timestamp"].tolist() == [50, 99, 99]
        assert log["value"][0] == 4.5 and np.isnan(log["value"][1])
        assert store.counts()["users"] == 2 and seq == store.sequence()
        assert store.history(1).tolist() == [2, 1]

    def test_a_batch_with_an_unknown_item_changes_nothing(self, store: Store) -> None:
        """One bad row fails the whole batch, names its row, and writes no event, user or sequence."""
        store.upsert_items([Item("a")])
        store.delete_items(["a"])
        store.upsert_items([Item("b")])
        before, counts = store.sequence(), store.counts()
        with pytest.raises(NotFound, match=r"events\[1\]\.item"):
            store.record_events([Event("u1", "b", LIKE), Event("u1", "a", LIKE)], now=1)
        assert store.sequence() == before and store.counts() == counts
        assert store.resolve(USER, ["u1"]).tolist() == [0]

    def test_forgetting_a_user_removes_their_history_and_mapping(self, store: Store) -> None:
        """After delete_user, no event, row or id of theirs remains; the same external id later is a new user."""
        store.upsert_items([Item("a")])
        store.upsert_users([User("u1", {"age": 30.0})])
        store.record_events([Event("u1", "a", LIKE), Event("u2", "a", LIKE)], now=1)
        _, forgotten = store.delete_user("u1")
        assert forgotten == 1
        assert store.events()["user"].tolist() == [2]
        assert store.resolve(USER, ["u1"]).tolist() == [0]
        store.upsert_users([User("u1")])
        assert store.resolve(USER, ["u1"]).tolist() == [3]  # ids are never reused
        assert store.delete_user("nobody")[1] is None


class TestDurability:
    def test_acknowledged_writes_survive_reopening(self, store_url: str) -> None:
        """What a write acknowledged is there for the next process that opens the store."""
        first = open_store(store_url)
        seq = first.upsert_items([Item("a", title="kept")])
        first.close()
        second = open_store(store_url)
        items, reached = second.changes(0)
        assert reached == seq and items[0].title == "kept"
        second.close()

    def test_sqlite_runs_in_wal_mode_with_full_sync(self, tmp_path: Path) -> None:
        """The embedded store is SQLite in WAL mode with synchronous=FULL (fsync at every commit)."""
        store = open_store(tmp_path / "c.db")
        store.upsert_items([Item("a")])
        conn = store._conn.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        store.close()


class TestStoreDown:
    def test_sqlite_that_cannot_be_opened_is_unavailable_naming_the_store(self, tmp_path: Path) -> None:
        """A store path that cannot be a database gets UNAVAILABLE naming the store, not a crash."""
        (tmp_path / "c.db").mkdir()  # a directory where the file should be
        with pytest.raises(Unavailable, match="store"):
            open_store(tmp_path / "c.db")

    def test_postgres_that_is_not_listening_is_unavailable(self) -> None:
        """A PostgreSQL URL with nothing behind it gets UNAVAILABLE naming the store and its host, never the password."""
        with pytest.raises(Unavailable, match=r"store \(postgresql 127\.0\.0\.1:1/x\)") as caught:
            open_store("postgresql://u:secret@127.0.0.1:1/x")
        assert "secret" not in str(caught.value)


def _writer(url: str, prefix: str, count: int) -> None:
    store = open_store(url)
    for n in range(count):
        store.upsert_items([Item(f"{prefix}{n}")])
    store.close()


def test_concurrent_writers_never_let_a_follower_skip_a_change(store_url: str) -> None:
    """Two processes write while a follower polls: the follower ends with every item exactly once, in sequence order."""
    follower_store = open_store(store_url)
    seen: list[int] = []
    follower = ChangeFollower(follower_store, lambda items, reached: seen.extend(i.seq for i in items), batch=7)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(store_url, p, 60)) for p in ("x", "y")]
    for w in writers:
        w.start()
    while any(w.is_alive() for w in writers):
        follower.poll()
    for w in writers:
        w.join()
        assert w.exitcode == 0
    follower.poll()
    assert len(seen) == 120 and seen == sorted(seen)
    follower_store.close()


def test_sqlite_module_is_recent_enough_for_returning() -> None:
    """UPDATE ... RETURNING (sequence allocation) needs SQLite 3.35 or newer."""
    assert sqlite3.sqlite_version_info >= (3, 35)


class TestProductsOnOneServer:
    def test_each_schema_holds_its_own_catalog_and_is_made_when_missing(self, postgres_database: str) -> None:
        """Two products on one PostgreSQL database, `?options=-csearch_path=NAME` each: the schema is created on
        first open, ids and sequences start at 1 in each, neither sees the other's items, and the default
        (public) catalog beside them stays empty."""
        shop, films = (open_store(f"{postgres_database}?options=-csearch_path%3D{name}") for name in ("shop", "films"))
        public = open_store(postgres_database)
        try:
            assert (shop.schema, films.schema, public.schema) == ("shop", "films", "public")
            first = shop.upsert_items([Item("s-1"), Item("s-2")])
            assert films.upsert_items([Item("f-1")]) == 1 and first == 2
            assert [i.external_id for i in shop.changes(0)[0]] == ["s-1", "s-2"]
            assert [i.external_id for i in films.changes(0)[0]] == ["f-1"]
            assert films.resolve(ITEM, ["s-1", "f-1"]).tolist() == [0, 1]
            assert public.sequence() == 0
        finally:
            for store in (shop, films, public):
                store.close()

    def test_a_writer_in_one_schema_never_waits_for_a_writer_in_another(self, postgres_database: str) -> None:
        """While a write transaction of the shop's catalog is open (holding its writers' lock), the films' catalog
        takes a write at once; the shop's own second writer waits on the lock (PostgreSQL shows it waiting) and
        writes after the first commits."""
        import threading

        import psycopg

        url = f"{postgres_database}?options=-csearch_path%3D"
        shop, films, shop_again = open_store(url + "shop"), open_store(url + "films"), open_store(url + "shop")
        try:
            with shop._transaction():  # an open write: the shop's writers' lock is held until it ends
                films_writer = threading.Thread(target=films.upsert_items, args=([Item("f")],))
                films_writer.start()
                films_writer.join(timeout=60)
                assert not films_writer.is_alive(), "the films' write waited for the shop's lock"
                shop_writer = threading.Thread(target=shop_again.upsert_items, args=([Item("s")],))
                shop_writer.start()
                with psycopg.connect(postgres_database, autocommit=True) as watch:
                    waiting = 0
                    while not waiting and shop_writer.is_alive():
                        waiting = watch.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                                "AND NOT granted").fetchone()[0]
                assert waiting == 1 and shop_writer.is_alive()
            shop_writer.join(timeout=60)
            assert not shop_writer.is_alive() and shop.sequence() == 1 and films.sequence() == 1
        finally:
            for store in (shop, films, shop_again):
                store.close()
