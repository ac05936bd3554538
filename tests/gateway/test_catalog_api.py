"""The Catalog API through a real gateway, paramserver and ranker, on a real store: acks, bad rows, forgetting."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from catalog import USER, open_store
from catalog.encoding import ContentEncoder
from feedserve.v1 import catalog_pb2, common_pb2, gateway_pb2, paramserver_pb2
from mesh.tensors import from_tensor, to_tensor
from tests.postgres import control, postgres_bindir, running_postgres
from tests.stack import grpc_status as _status
from tests.stack import running_stack

LIKE = common_pb2.EVENT_TYPE_LIKE


def _items(*ids: str, **fields) -> catalog_pb2.UpsertItemsRequest:
    return catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.CatalogItem(id=i, title=f"title {i}", **fields) for i in ids])


def _events(*rows: tuple[str, str]) -> list[catalog_pb2.CatalogEvent]:
    return [catalog_pb2.CatalogEvent(user=u, item=i, event=LIKE) for u, i in rows]


def _encoded(path, encoder) -> int:
    """Give every pending item its content vector (the gateway's background worker, run here in the foreground)."""
    store = open_store(path)
    ContentEncoder(store, encoder.encode_batch).drain()
    return store.sequence()



class TestWrites:
    def test_writes_are_acknowledged_with_the_sequence_they_reached(self, catalog, manifest, tmp_path, run) -> None:
        """Each ack carries a higher sequence and its row count; the store holds exactly what was acked."""

        async def body() -> None:
            store = open_store(tmp_path / "catalog.db")
            async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db")) as stack:
                items = await stack.catalog.UpsertItems(_items("m1", "m2", categories=["drama"]), timeout=10)
                users = await stack.catalog.UpsertUsers(catalog_pb2.UpsertUsersRequest(users=[catalog_pb2.CatalogUser(
                    id="u1", attributes={"country": catalog_pb2.AttributeValue(text="fr")})]), timeout=10)
                events = await stack.catalog.InteractBatch(
                    catalog_pb2.InteractBatchRequest(events=_events(("u1", "m1"), ("u2", "m2"))), timeout=10)
                deleted = await stack.catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(ids=["m2", "nope"]), timeout=10)
                assert (items.rows, users.rows, events.rows) == (2, 1, 2)
                assert items.sequence < users.sequence < events.sequence < deleted.sequence == store.sequence()
                assert store.counts() == {"items": 1, "deleted_items": 1, "users": 2, "events": 2}

        run(body())

    @pytest.mark.parametrize("request_, field", [
        (_items("ok", ""), "items[1].id"),
        (_items("ok", "x" * 257), "items[1].id"),
        (catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.CatalogItem(id="ok"), catalog_pb2.CatalogItem(
            id="b", attributes={"colour": catalog_pb2.AttributeValue(text="red")})]), "items[1].attributes.colour"),
        (catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.CatalogItem(id="ok"), catalog_pb2.CatalogItem(
            id="b", attributes={"author": catalog_pb2.AttributeValue(number=3.0)})]), "items[1].attributes.author"),
        (catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.CatalogItem(id="ok"), catalog_pb2.CatalogItem(
            id="b", attributes={"author": catalog_pb2.AttributeValue()})]), "items[1].attributes.author"),
        (_items(*(str(n) for n in range(10_001))), "items"),
        (catalog_pb2.UpsertItemsRequest(), "items"),
    ])
    def test_a_bad_item_batch_names_the_row_and_changes_nothing(self, catalog, manifest, tmp_path, run, request_,
                                                                field: str) -> None:
        """Empty or overlong ids, undeclared fields, wrong types, empty values and oversized batches are
        INVALID_ARGUMENT naming row and field; the store's sequence does not move."""

        async def body() -> None:
            store = open_store(tmp_path / "catalog.db")
            async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db")) as stack:
                code, details = await _status(stack.catalog.UpsertItems(request_, timeout=30))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}:")
                assert store.sequence() == 0

        run(body())

    def test_events_with_an_unknown_item_or_bad_value_change_nothing(self, catalog, manifest, tmp_path, run) -> None:
        """An unknown item is NOT_FOUND naming its row; NaN and unknown event types are INVALID_ARGUMENT naming it."""

        async def body() -> None:
            store = open_store(tmp_path / "catalog.db")
            async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db")) as stack:
                await stack.catalog.UpsertItems(_items("m1"), timeout=10)
                before = store.sequence()
                code, details = await _status(stack.catalog.InteractBatch(
                    catalog_pb2.InteractBatchRequest(events=_events(("u1", "m1"), ("u1", "gone"))), timeout=10))
                assert code == grpc.StatusCode.NOT_FOUND and details.startswith("events[1].item")
                bad = _events(("u1", "m1"), ("u1", "m1"))
                bad[1].value = math.nan
                code, details = await _status(stack.catalog.InteractBatch(catalog_pb2.InteractBatchRequest(events=bad)))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events[1].value")
                bad[1].ClearField("value")
                bad[1].event = 99
                code, details = await _status(stack.catalog.InteractBatch(catalog_pb2.InteractBatchRequest(events=bad)))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events[1].event")
                bad[1].event = bad[0].event
                bad[1].timestamp = int(time.time()) + 3600  # an event cannot be dated after now
                code, details = await _status(stack.catalog.InteractBatch(catalog_pb2.InteractBatchRequest(events=bad)))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("events[1].timestamp")
                assert store.sequence() == before and store.counts()["events"] == 0

        run(body())

    def test_interact_by_external_ids_logs_the_event_and_drifts(self, catalog, manifest, tmp_path, run,
                                                              content_encoder) -> None:
        """Interact with `user` and `item` logs durably (its ack has the sequence) and moves the user's vector."""

        async def body() -> None:
            store = open_store(tmp_path / "catalog.db")
            async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db")) as stack:
                await stack.catalog.UpsertItems(_items("m1", "m2", "m3"), timeout=10)
                await stack.catalog.UpsertUsers(catalog_pb2.UpsertUsersRequest(users=[catalog_pb2.CatalogUser(id="u1")]))
                stack.caught_up(_encoded(tmp_path / "catalog.db", content_encoder))
                reply = await stack.gateway.Interact(gateway_pb2.InteractRequest(
                    user="u1", item="m3", event=LIKE, timestamp=1_700_000_000, value=4.5), timeout=10)
                assert reply.sequence == store.sequence() and reply.applied
                log = store.events()
                assert log["item"].tolist() == [3] and log["value"].tolist() == [4.5]
                assert log["timestamp"].tolist() == [1_700_000_000]
                code, details = await _status(stack.gateway.Interact(
                    gateway_pb2.InteractRequest(user="u1", item="nope", event=LIKE), timeout=10))
                assert code == grpc.StatusCode.NOT_FOUND and details.startswith("item:")
                code, details = await _status(stack.gateway.Interact(
                    gateway_pb2.InteractRequest(user="u1", item="m1", event=LIKE, value=math.inf), timeout=10))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("value:")
                assert store.counts()["events"] == 1

        run(body())

    def test_interact_by_external_ids_without_a_store_is_a_failed_precondition(self, catalog, manifest, tmp_path, run) -> None:
        """A gateway started without --store says what to change rather than guessing."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, gateway_store=False) as stack:
                code, details = await _status(stack.gateway.Interact(
                    gateway_pb2.InteractRequest(user="u1", item="m1", event=LIKE), timeout=10))
                assert code == grpc.StatusCode.FAILED_PRECONDITION and "--store" in details

        run(body())


class TestForgetting:
    def test_delete_user_forgets_vector_history_and_cached_feed(self, catalog, manifest, tmp_path, run,
                                                               content_encoder) -> None:
        """After DeleteUser the paramserver has no vector, the store no events or id, and the feed cache no entry."""

        async def body() -> None:
            store = open_store(tmp_path / "catalog.db")
            async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db")) as stack:
                await stack.catalog.UpsertItems(_items("m1", "m2"), timeout=10)
                stack.caught_up(_encoded(tmp_path / "catalog.db", content_encoder))
                await stack.catalog.InteractBatch(
                    catalog_pb2.InteractBatchRequest(events=_events(("u1", "m1"), ("u1", "m2")), drift=True), timeout=10)
                user = int(store.resolve(USER, ["u1"])[0])
                await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=user), timeout=10)
                assert stack.service.cache.get(user, 20) is not None
                ack = await stack.catalog.DeleteUser(catalog_pb2.DeleteUserRequest(id="u1"), timeout=10)
                assert ack.rows == 1 and ack.sequence == store.sequence()
                found = await stack.paramserver.Lookup(paramserver_pb2.LookupRequest(
                    table=paramserver_pb2.TABLE_USER, keys=to_tensor(np.array([user], np.int64))))
                assert not from_tensor(found.found, "found")[0]
                assert stack.service.cache.get(user, 20) is None
                assert store.counts()["events"] == 0 and store.resolve(USER, ["u1"]).tolist() == [0]
                again = await stack.catalog.DeleteUser(catalog_pb2.DeleteUserRequest(id="u1"), timeout=10)
                assert again.rows == 0  # idempotent

        run(body())

    def test_interact_batch_with_drift_moves_each_user(self, catalog, manifest, tmp_path, run, content_encoder) -> None:
        """drift=true moves every user in the batch toward their items, as Interact would."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db")) as stack:
                await stack.catalog.UpsertItems(_items("m1", "m2", "m3"), timeout=10)
                await stack.catalog.UpsertUsers(catalog_pb2.UpsertUsersRequest(
                    users=[catalog_pb2.CatalogUser(id=f"u{n}") for n in range(1, 4)]), timeout=10)
                stack.caught_up(_encoded(tmp_path / "catalog.db", content_encoder))
                keys = to_tensor(np.array([1, 2, 3], np.int64))
                lookup = paramserver_pb2.LookupRequest(table=paramserver_pb2.TABLE_USER, keys=keys)
                before = from_tensor((await stack.paramserver.Lookup(lookup)).values, "values").copy()
                await stack.catalog.InteractBatch(catalog_pb2.InteractBatchRequest(
                    events=_events(("u1", "m3"), ("u2", "m1"), ("u3", "m2")), drift=True), timeout=10)
                after = from_tensor((await stack.paramserver.Lookup(lookup)).values, "values")
                assert not np.allclose(before, after, atol=1e-6, rtol=0) and (np.abs(before - after).sum(axis=1) > 0).all()

        run(body())


@pytest.mark.skipif(postgres_bindir()[0] is None, reason=postgres_bindir()[1])
def test_a_store_that_goes_down_is_unavailable_and_comes_back(catalog, manifest, tmp_path, run) -> None:
    """PostgreSQL stopped under a running gateway: writes get UNAVAILABLE naming the store, nothing is acked;
    once it is back, the next write reconnects and succeeds."""
    root = Path(tempfile.mkdtemp(prefix="feedserve-pg-"))

    async def body(url: str, restart) -> None:
        store = open_store(url)
        async with running_stack(catalog, manifest, tmp_path, store=url) as stack:
            first = await stack.catalog.UpsertItems(_items("m1"), timeout=10)
            restart("stop")
            code, details = await _status(stack.catalog.UpsertItems(_items("m2"), timeout=30))
            assert code == grpc.StatusCode.UNAVAILABLE and "store (postgresql" in details
            restart("start")
            second = await stack.catalog.UpsertItems(_items("m3"), timeout=30)
            assert second.sequence == first.sequence + 1  # the refused write took no number
        store.close()

    try:
        with running_postgres(root) as url:
            run(body(url, lambda action: control(root, action)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
