"""The Catalog servicer: items, users and events in through the store, each acknowledged once durable with its sequence."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Iterable, Mapping

import grpc
import numpy as np

from catalog import Event, Item, Schema, Store, User
from catalog.records import check_batch, check_events, check_id, check_items, check_users
from catalog.schema import AttributeValue
from errors import InvalidArgument, NotFound
from feedserve.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, paramserver_pb2
from gateway.auth import events_keep_their_time
from gateway.cache import AnswerCache, FeedCache
from mesh.clients import ParamServerClient
from mesh.rpclog import annotate, request_id

__all__ = ["CatalogService", "KNOWN_EVENTS", "event_from_proto", "drift_all"]

KNOWN_EVENTS = frozenset(common_pb2.EventType.values()) - {common_pb2.EVENT_TYPE_UNSPECIFIED}
WRITE_TIMEOUT_S = 30.0  # a batch of 10,000 waits for one fsync, but the store may be busy with another writer
_DRIFT_CONCURRENCY = 32


def _attributes(values: Mapping[str, catalog_pb2.AttributeValue], where: str) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for name, value in values.items():
        kind = value.WhichOneof("value")
        if kind is None:
            raise InvalidArgument(f"{where}.attributes.{name}", "no value set")
        out[name] = list(value.list.values) if kind == "list" else getattr(value, kind)
    return out


def _item(item: catalog_pb2.CatalogItem, where: str) -> Item:
    return Item(item.id, item.title, item.text, list(item.categories), list(item.tags), item.published,
                _attributes(item.attributes, where), item.hidden)


def event_from_proto(user: str, item: str, event: int, timestamp: int, value: float | None, where: str) -> Event:
    """An Event from the wire; a value that is present must be finite."""
    if value is not None and not math.isfinite(value):
        raise InvalidArgument(f"{where}.value" if where else "value", f"expected a finite number, got {value}")
    return Event(user, item, event, timestamp, math.nan if value is None else value)


class CatalogService(catalog_pb2_grpc.CatalogServicer):
    """Writes go to the store in a worker thread (each waits for its commit's fsync); derived state follows the
    store's change feed. Forgetting a user also reaches the paramserver and the gateway's caches."""

    def __init__(self, store: Store, schema: Schema, paramserver: ParamServerClient,
                 caches: Iterable[FeedCache | AnswerCache] = ()) -> None:
        self.store, self.schema, self.paramserver = store, schema, paramserver
        self.caches = list(caches)

    def _ack(self, sequence: int, rows: int) -> catalog_pb2.WriteAck:
        annotate(sequence=sequence, rows=rows)
        return catalog_pb2.WriteAck(sequence=sequence, rows=rows, request_id=request_id())

    # Reading, checking and writing a batch of up to 10,000 rows is Python work: it runs in a worker thread, so
    # that feeds on the event loop are not queued behind it.

    def _upsert_items(self, request: catalog_pb2.UpsertItemsRequest) -> int:
        items = [_item(item, f"items[{row}]") for row, item in enumerate(request.items)]
        check_items(items, self.schema)
        return self.store.upsert_items(items)

    async def UpsertItems(self, request: catalog_pb2.UpsertItemsRequest, context: grpc.aio.ServicerContext) -> catalog_pb2.WriteAck:
        return self._ack(await asyncio.to_thread(self._upsert_items, request), len(request.items))

    async def DeleteItems(self, request: catalog_pb2.DeleteItemsRequest, context: grpc.aio.ServicerContext) -> catalog_pb2.WriteAck:
        ids = list(request.ids)
        check_batch(ids, "ids")
        for row, external in enumerate(ids):
            check_id(external, f"ids[{row}]")
        return self._ack(await asyncio.to_thread(self.store.delete_items, ids), len(ids))

    async def UpsertUsers(self, request: catalog_pb2.UpsertUsersRequest, context: grpc.aio.ServicerContext) -> catalog_pb2.WriteAck:
        users = [User(user.id, _attributes(user.attributes, f"users[{row}]")) for row, user in enumerate(request.users)]
        check_users(users, self.schema)
        return self._ack(await asyncio.to_thread(self.store.upsert_users, users), len(users))

    async def DeleteUser(self, request: catalog_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext) -> catalog_pb2.WriteAck:
        """The vector goes first, then the store: if either is down the call fails, and a retry still finds the id."""
        check_id(request.id, "id")
        known = (await asyncio.to_thread(self.store.users, [request.id])).get(request.id)
        if known is not None:
            user = known[0]
            left = context.time_remaining()
            await self.paramserver.remove(paramserver_pb2.TABLE_USER, np.array([user], np.int64),
                                          WRITE_TIMEOUT_S if left is None else left, request_id())
            for cache in self.caches:
                cache.invalidate(user)
        sequence, _ = await asyncio.to_thread(self.store.delete_user, request.id)
        return self._ack(sequence, int(known is not None))

    def _record_events(self, request: catalog_pb2.InteractBatchRequest) -> tuple[int, np.ndarray, np.ndarray, list[Event]]:
        events = [event_from_proto(e.user, e.item, e.event, e.timestamp, e.value if e.HasField("value") else None,
                                   f"events[{row}]") for row, e in enumerate(request.events)]
        check_events(events, KNOWN_EVENTS)
        return (*self.store.record_events(events, int(time.time())), events)

    async def InteractBatch(self, request: catalog_pb2.InteractBatchRequest, context: grpc.aio.ServicerContext) -> catalog_pb2.WriteAck:
        sequence, users, items, events = await asyncio.to_thread(self._record_events, request)
        for user in np.unique(users).tolist():  # read-your-writes (a page cursor carries its ranking on)
            for cache in self.caches:
                cache.invalidate(user)
        held = 0
        if request.drift:
            left = context.time_remaining()
            dated = [e.timestamp for e in events] if events_keep_their_time() else [0] * len(events)
            _, held = await drift_all(self.paramserver, users, items, [e.event for e in events],
                                      WRITE_TIMEOUT_S if left is None else left, dated)
        ack = self._ack(sequence, len(events))
        ack.held_back = held
        return ack


async def drift_all(paramserver: ParamServerClient, users: np.ndarray, items: np.ndarray, events: list[int],
                    timeout: float, event_times: list[int] | None = None) -> tuple[int, int]:
    """Drift each (user, item, event) in order per user, users in parallel; returns how many moved a vector and
    how many a guardrail held back. An item the paramserver does not hold yet (its change not applied) moves nothing.
    `event_times` (an admin's backfill) date each move for the guardrails; none: live events."""
    by_user: dict[int, list[tuple[int, int, int]]] = {}
    for user, item, event, at in zip(users.tolist(), items.tolist(), events, event_times or [0] * len(events)):
        by_user.setdefault(user, []).append((item, event, at))
    gate = asyncio.Semaphore(_DRIFT_CONCURRENCY)
    rid = request_id()

    async def one_user(user: int, moves: list[tuple[int, int, int]]) -> tuple[int, int]:
        moved = held = 0
        async with gate:
            for item, event, at in moves:
                try:
                    request = paramserver_pb2.DriftRequest(user_id=user, item_id=item, event=event, event_time=at)  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
                    reply = await paramserver.drift(request, timeout, rid)
                    moved += reply.applied
                    held += reply.held_back != common_pb2.GUARDRAIL_NONE
                except NotFound:
                    continue
        return moved, held

    results: list[Awaitable[tuple[int, int]]] = [one_user(user, moves) for user, moves in by_user.items()]
    counts = await asyncio.gather(*results)
    return sum(c[0] for c in counts), sum(c[1] for c in counts)

