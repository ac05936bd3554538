"""The ParamServer core (Lookup, Upsert, Drift, Snapshot) over native cuckoo tables, and its gRPC servicer.

Writes are validated, appended to the WAL and applied under one lock (so WAL order is apply order),
then acknowledged once durable by the WAL's policy. Reads take no Python lock: the table's own
reader lock keeps rows whole. State = latest snapshot + WAL replay.

Item rows follow the catalog's change feed (an item's content vector, once encoded; removed when it is deleted
or hidden), through the same logged writes, with the sequence reached logged after each batch: a restart
resumes the feed from there. User rows come from drift, and from Upsert (vectors learned or replayed offline).
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from catalog import ChangeFollower, Store, StoredItem
from catalog.drift import DEFAULT_RATES
from catalog.records import check_event_time, check_key
from errors import InvalidArgument, NotFound
from feedserve.v1 import common_pb2, paramserver_pb2, paramserver_pb2_grpc
from mesh.methods import Handler, Outputs, Tensors, serve_unary
from mesh.shards import SLOTS, SlotRange
from mesh.tensors import check_finite, expect
from mesh.timing import HopRecorder
from native import INSERTED, PENDING, CuckooTable
from paramserver.guardrails import Guardrails
from paramserver.wal import WriteAheadLog

__all__ = ["ParamServer", "ParamServerServicer", "TableConfig", "MAX_BATCH"]

MAX_BATCH = 100_000
SERVICE = "paramserver"
USER, ITEM = paramserver_pb2.TABLE_USER, paramserver_pb2.TABLE_ITEM
_OP_UPSERT, _OP_DRIFT, _OP_REMOVE, _OP_FEED = 1, 2, 3, 4
_FEED = struct.Struct("<Q")
_UPSERT = struct.Struct("<BI")
_DRIFT = struct.Struct("<QQBf")  # user, item, event, rate: what releases before the guardrails' time logged
_DRIFT_AT = struct.Struct("<QQBfd")  # and the time the guardrails judged the move at


def _now() -> int:
    return int(time.time()) & 0xFFFFFFFF


@dataclass(frozen=True)
class TableConfig:
    """Per-table lifecycle: precision, expiry since last update (0: never), admission after N sightings."""

    precision: str = "fp32"
    ttl_s: int = 0
    admit_after: int = 1


class ParamServer:
    def __init__(self, dim: int, state_dir: Path, rates: dict[int, float] | None = None,
                 users: TableConfig = TableConfig(), items: TableConfig = TableConfig(),
                 fsync: str = "always", fsync_interval_s: float = 0.0, slots: SlotRange | None = None,
                 store: Store | None = None, poll_s: float = 0.05, guardrails: Guardrails | None = None) -> None:
        self.dim = dim
        self.guardrails = guardrails if guardrails is not None else Guardrails()
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self.state_dir = state_dir
        self.configs = {USER: users, ITEM: items}
        self.slots = slots or SlotRange(0, SLOTS - 1)
        self.stats = {table: {"hits": 0, "misses": 0} for table in (USER, ITEM)}
        self._lock = threading.Lock()  # serialises writers: WAL order is apply order
        state_dir.mkdir(parents=True, exist_ok=True)
        self.feed_seq = 0  # the catalog sequence whose item changes are applied
        self.tables = self._restore()
        self.wal = WriteAheadLog(state_dir / "wal", fsync, fsync_interval_s)
        self.replayed = self._replay()
        self.follower = None
        if store is not None:
            self.follower = ChangeFollower(store, self._apply_items, after=self.feed_seq, poll_s=poll_s)
            self.follower.poll()
            self.follower.start()

    # -- state ----------------------------------------------------------------------------------

    def _new_table(self, table: int, expected: int) -> CuckooTable:
        config = self.configs[table]  # type: ignore[index]  # keyed by the Table enum, which is an int
        return CuckooTable(self.dim, config.precision, expected=max(expected, 1024), admit_after=config.admit_after)

    def _snapshots(self) -> list[Path]:
        return sorted(self.state_dir.glob("snapshot-*.npz"))

    def _restore(self) -> dict[int, CuckooTable]:
        snapshots = self._snapshots()
        self.snapshot_seq = 0
        if snapshots:
            with np.load(snapshots[-1]) as saved:
                self.snapshot_seq = int(saved["seq"])
                self.feed_seq = int(saved["feed_seq"]) if "feed_seq" in saved.files else 0
                self.guardrails.restore({k: saved[k] for k in saved.files if k.startswith("guardrail_")})
                tables: dict[int, CuckooTable] = {}
                for table, name in ((USER, "user"), (ITEM, "item")):
                    keys = saved[f"{name}_keys"]
                    tables[table] = self._new_table(table, len(keys))
                    for start in range(0, len(keys), MAX_BATCH):  # keys that had rows keep them: no admission
                        part = slice(start, start + MAX_BATCH)
                        tables[table].upsert(keys[part], saved[f"{name}_values"][part], _now(), admit=False)
                return tables
        return {USER: self._new_table(USER, 0), ITEM: self._new_table(ITEM, 0)}

    def _replay(self) -> int:
        count = 0
        for _, op, payload in self.wal.replay(self.snapshot_seq):
            if op == _OP_UPSERT:
                table, n = _UPSERT.unpack_from(payload)
                keys = np.frombuffer(payload, np.int64, n, _UPSERT.size)
                values = np.frombuffer(payload, np.float32, n * self.dim, _UPSERT.size + 8 * n).reshape(n, self.dim)
                self.tables[table].upsert(keys, values, _now())
            elif op == _OP_FEED:
                self.feed_seq = _FEED.unpack(payload)[0]
            elif op == _OP_REMOVE:
                table, n = _UPSERT.unpack_from(payload)
                self.tables[table].remove(np.frombuffer(payload, np.int64, n, _UPSERT.size))
            elif op == _OP_DRIFT:
                timed = len(payload) == _DRIFT_AT.size
                user, item, _, rate, *at = (_DRIFT_AT if timed else _DRIFT).unpack(payload)
                vector = self._item_vector(item)
                current, moved = self._user_vector(user), None
                if vector is not None:
                    moved = self._move_user(user, vector, rate)[0]
                if timed:  # the guardrails count it again, as they counted it before the restart
                    self.guardrails.replay(user, current, moved, at[0])
            count += 1
        return count

    # -- handlers -------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {"Lookup": self.lookup, "Upsert": self.upsert, "Drift": self.drift, "Remove": self.remove,
                "Snapshot": self.snapshot}

    def _table(self, table: int) -> CuckooTable:
        if table not in self.tables:
            raise InvalidArgument("table", f"unknown table {table}")
        return self.tables[table]

    def _keys(self, tensors: Tensors, table: int) -> np.ndarray:
        keys = expect(tensors, "keys", np.int64, ndim=1, required=True)
        if len(keys) > MAX_BATCH:
            raise InvalidArgument("keys", f"at most {MAX_BATCH} keys per call, got {len(keys)}")
        if (keys <= 0).any():
            raise InvalidArgument("keys", "keys are expected to be positive")
        if table == USER and not self.slots.owns(keys).all():
            raise InvalidArgument("keys", f"some users hash outside the slots {self.slots} this shard owns")
        return keys

    def lookup(self, request: paramserver_pb2.LookupRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.LookupResponse:
        hops = HopRecorder(SERVICE)
        with hops.stage("lookup"):
            table = self._table(request.table)
            keys = self._keys(tensors, request.table)
            values = outputs.empty("values", np.float32, (len(keys), self.dim))  # the response slot, on the ring
            found = outputs.empty("found", np.uint8, (len(keys),))
            hits = table.lookup_into(keys.view(np.uint64), values, found, _now(), self.configs[request.table].ttl_s)
            stats = self.stats[request.table]
            stats["hits"] += hits
            stats["misses"] += len(keys) - hits
        return paramserver_pb2.LookupResponse(hops=hops.hops)

    def upsert(self, request: paramserver_pb2.UpsertRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.UpsertResponse:
        table = self._table(request.table)
        keys = self._keys(tensors, request.table)
        values = expect(tensors, "values", np.float32, ndim=2, required=True)
        if values.shape != (len(keys), self.dim):
            raise InvalidArgument("values.shape", f"expected [{len(keys)}, {self.dim}], got {list(values.shape)}")
        check_finite(values, "values")
        payload = _UPSERT.pack(request.table, len(keys)) + keys.tobytes() + np.ascontiguousarray(values).tobytes()
        with self._lock:
            seq = self.wal.append(_OP_UPSERT, payload)
            status = table.upsert(keys, values, _now())
        self.wal.wait_durable(seq)
        return paramserver_pb2.UpsertResponse(upserted=int((status != PENDING).sum()))

    def remove(self, request: paramserver_pb2.RemoveRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.RemoveResponse:
        """Logged before it is applied, like every write: a forgotten user stays forgotten after a crash."""
        table = self._table(request.table)
        keys = self._keys(tensors, request.table)
        with self._lock:
            seq = self.wal.append(_OP_REMOVE, _UPSERT.pack(request.table, len(keys)) + keys.tobytes())
            removed = table.remove(keys)
            if request.table == USER:
                for user in keys.tolist():
                    self.guardrails.forget(user)
        self.wal.wait_durable(seq)
        return paramserver_pb2.RemoveResponse(removed=int(removed.sum()))

    def _apply_items(self, changed: list[StoredItem], reached: int) -> None:
        """One batch of the catalog's change feed: servable items' vectors in, the rest out, then the sequence."""
        keep = [i for i in changed if i.servable and i.vector is not None and len(i.vector) == self.dim]
        rows = [i.vector for i in keep if i.vector is not None]
        gone = np.array([i.id for i in changed if not (i.servable and i.vector is not None)], np.int64)
        keys = np.array([i.id for i in keep], np.int64)
        values = np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
        with self._lock:
            last = 0
            if len(keys):
                last = self.wal.append(_OP_UPSERT, _UPSERT.pack(ITEM, len(keys)) + keys.tobytes() + values.tobytes())
                self.tables[ITEM].upsert(keys, values, _now(), admit=False)
            if len(gone):
                last = self.wal.append(_OP_REMOVE, _UPSERT.pack(ITEM, len(gone)) + gone.tobytes())
                self.tables[ITEM].remove(gone)
            last = self.wal.append(_OP_FEED, _FEED.pack(reached))
            self.feed_seq = reached
        self.wal.wait_durable(last)

    def _item_vector(self, item: int) -> np.ndarray | None:
        vector, found = self.tables[ITEM].lookup(np.array([item], np.int64))
        return vector if found[0] else None

    def _user_vector(self, user: int) -> np.ndarray | None:
        vector, found = self.tables[USER].lookup(np.array([user], np.int64))
        return vector[0] if found[0] else None

    def _move_user(self, user: int, item_vector: np.ndarray, rate: float) -> tuple[np.ndarray, int]:
        moved, status = self.tables[USER].drift(np.array([user], np.int64), item_vector, np.array([rate], np.float32), _now())
        return moved[0], int(status[0])

    def drift(self, request: paramserver_pb2.DriftRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.DriftResponse:
        """Move the user toward (or away from) the item: the native table plans the move, the guardrails judge
        exactly that move, and only an allowed one is logged and stored (the same rows the plan answered)."""
        for name in ("user_id", "item_id"):  # keys are positive int64: the tables' key space
            if getattr(request, name) == 0:
                raise InvalidArgument(name, "is required")
            check_key(getattr(request, name), name)
        if request.event not in self.rates:
            raise InvalidArgument("event", f"unknown event type {request.event}")
        check_event_time(request.event_time, "event_time")
        if not self.slots.owns(np.array([request.user_id], np.int64))[0]:
            raise InvalidArgument("user_id", f"hashes outside the slots {self.slots} this shard owns")
        rate = self.rates[request.event]
        key = np.array([request.user_id], np.int64)
        with self._lock:
            item = self._item_vector(request.item_id)
            if item is None:
                raise NotFound(f"item_id {request.item_id} not found")
            planned, plan = self.tables[USER].drift(key, item, np.array([rate], np.float32), _now(), commit=False)
            current, found = self.tables[USER].lookup(key)
            if plan[0] == 0:  # a zero rate, a negative event for an unknown user: nothing moves, nothing is logged
                if found[0]:
                    outputs.empty("user_vector", np.float32, (self.dim,))[...] = current[0]
                return paramserver_pb2.DriftResponse(applied=False, rate=rate)
            when = self.guardrails.moment(request.event_time)
            held = self.guardrails.check(request.user_id, current[0] if found[0] else None, planned[0], at=when)
            if held != common_pb2.GUARDRAIL_NONE:  # nothing logged, nothing moved: the ack says which guardrail
                if found[0]:
                    outputs.empty("user_vector", np.float32, (self.dim,))[...] = current[0]
                return paramserver_pb2.DriftResponse(applied=False, rate=rate, held_back=held)  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
            seq = self.wal.append(_OP_DRIFT, _DRIFT_AT.pack(request.user_id, request.item_id, request.event, rate, when))
            stored = self.tables[USER].upsert(key, planned, _now())[0]  # the planned move, stored as planned
            if stored != PENDING:
                outputs.empty("user_vector", np.float32, (self.dim,))[...] = self.tables[USER].lookup(key)[0][0]
        self.wal.wait_durable(seq)
        return paramserver_pb2.DriftResponse(applied=stored != PENDING, rate=rate, created=stored == INSERTED)

    def snapshot(self, request: paramserver_pb2.SnapshotRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.SnapshotResponse:
        """A consistent cut: writers wait while the tables are copied out; then the WAL is truncated."""
        with self._lock:
            seq = self.wal.last_seq
            arrays = {"seq": np.array(seq), "feed_seq": np.array(self.feed_seq), **self.guardrails.state()}
            for table, name in ((USER, "user"), (ITEM, "item")):
                keys, values, stamps = self.tables[table].items()
                arrays[f"{name}_keys"], arrays[f"{name}_values"], arrays[f"{name}_stamps"] = keys, values, stamps
        path = self.state_dir / f"snapshot-{seq:020d}.npz"
        staging = self.state_dir / f".snapshot-{seq:020d}.tmp.npz"
        with open(staging, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as the allow_pickle flag
            f.flush()
            os.fsync(f.fileno())
        staging.rename(path)
        directory = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a crash before the WAL goes
        finally:
            os.close(directory)
        self.wal.truncate_through(seq)
        for old in self._snapshots()[:-1]:
            old.unlink()
        rows = sum(len(arrays[f"{n}_keys"]) for n in ("user", "item"))
        return paramserver_pb2.SnapshotResponse(path=str(path), rows=rows)

    def expire(self) -> int:
        """Drop rows past their table's TTL; returns how many."""
        removed = 0
        for table, config in self.configs.items():
            if config.ttl_s:
                removed += self.tables[table].expire(_now(), config.ttl_s)
        return removed

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self.wal.close()


class ParamServerServicer(paramserver_pb2_grpc.ParamServerServicer):
    """The gRPC face of a ParamServer core. Writes run in a worker thread: they wait for the fsync."""

    def __init__(self, core: ParamServer) -> None:
        self.core = core

    async def Lookup(self, request: paramserver_pb2.LookupRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.LookupResponse:
        return serve_unary(self.core.lookup, request)

    async def Upsert(self, request: paramserver_pb2.UpsertRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.UpsertResponse:
        return await asyncio.to_thread(serve_unary, self.core.upsert, request)

    async def Drift(self, request: paramserver_pb2.DriftRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.DriftResponse:
        return await asyncio.to_thread(serve_unary, self.core.drift, request)

    async def Remove(self, request: paramserver_pb2.RemoveRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.RemoveResponse:
        return await asyncio.to_thread(serve_unary, self.core.remove, request)

    async def Snapshot(self, request: paramserver_pb2.SnapshotRequest,
                       context: grpc.aio.ServicerContext) -> paramserver_pb2.SnapshotResponse:
        return await asyncio.to_thread(serve_unary, self.core.snapshot, request)
