"""The ParamServer core (Lookup, Upsert, Drift, Snapshot) and its gRPC servicer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np

from feedserve.v1 import paramserver_pb2, paramserver_pb2_grpc
from mesh.dispatch import Handler, Outputs, Tensors, serve_unary
from mesh.errors import InvalidArgument, NotFound
from mesh.tensors import check_finite, expect
from mesh.timing import HopRecorder
from paramserver.drift import DEFAULT_RATES, drift
from paramserver.store import EmbeddingTable
from world import World

__all__ = ["ParamServer", "ParamServerServicer", "MAX_BATCH"]

MAX_BATCH = 100_000
SERVICE = "paramserver"


class ParamServer:
    """The user and item tables of one world; every write is validated before it lands.

    Calls arrive from the gRPC event loop and from the ring's dispatcher thread: one lock
    serialises them, so a reader never sees a half-moved row.
    """

    def __init__(self, world: World, state_dir: Path, rates: dict[int, float] | None = None) -> None:
        self.tables = {
            paramserver_pb2.TABLE_USER: EmbeddingTable.from_dense(world.user_ids, np.asarray(world.user_tastes)),
            paramserver_pb2.TABLE_ITEM: EmbeddingTable.from_dense(world.item_ids, np.asarray(world.item_embeddings)),
        }
        self.dim = world.spec.dim
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self.state_dir = state_dir
        self._lock = threading.Lock()

    def handlers(self) -> dict[str, Handler]:
        return {"Lookup": self.lookup, "Upsert": self.upsert, "Drift": self.drift, "Snapshot": self.snapshot}

    def _table(self, table: int) -> EmbeddingTable:
        if table not in self.tables:
            raise InvalidArgument("table", f"unknown table {table}")
        return self.tables[table]

    def _keys(self, tensors: Tensors) -> np.ndarray:
        keys = expect(tensors, "keys", np.int64, ndim=1, required=True)
        if len(keys) > MAX_BATCH:
            raise InvalidArgument("keys", f"at most {MAX_BATCH} keys per call, got {len(keys)}")
        return keys

    def lookup(self, request: paramserver_pb2.LookupRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.LookupResponse:
        hops = HopRecorder(SERVICE)
        with hops.stage("lookup"):
            table = self._table(request.table)
            keys = self._keys(tensors)
            with self._lock:
                values, found = table.lookup(keys)
            outputs.empty("values", np.float32, values.shape)[...] = values
            outputs.empty("found", np.uint8, found.shape)[...] = found
        return paramserver_pb2.LookupResponse(hops=hops.hops)

    def upsert(self, request: paramserver_pb2.UpsertRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.UpsertResponse:
        table = self._table(request.table)
        keys = self._keys(tensors)
        values = expect(tensors, "values", np.float32, ndim=2, required=True)
        if values.shape != (len(keys), self.dim):
            raise InvalidArgument("values.shape", f"expected [{len(keys)}, {self.dim}], got {list(values.shape)}")
        if (keys <= 0).any():
            raise InvalidArgument("keys", "keys are expected to be positive")
        check_finite(values, "values")
        with self._lock:
            table.upsert(keys, values)
        return paramserver_pb2.UpsertResponse(upserted=len(keys))

    def drift(self, request: paramserver_pb2.DriftRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.DriftResponse:
        if request.user_id == 0:
            raise InvalidArgument("user_id", "is required")
        if request.item_id == 0:
            raise InvalidArgument("item_id", "is required")
        if request.event not in self.rates:
            raise InvalidArgument("event", f"unknown event type {request.event}")
        rate = self.rates[request.event]
        with self._lock:
            item = self.tables[paramserver_pb2.TABLE_ITEM].get(request.item_id)
            if item is None:
                raise NotFound(f"item_id {request.item_id} not found")
            users = self.tables[paramserver_pb2.TABLE_USER]
            user = users.get(request.user_id)
            created = user is None
            if created and rate <= 0:  # nothing to learn about a stranger from a negative event
                return paramserver_pb2.DriftResponse(applied=False, rate=rate)
            if rate == 0:
                outputs.empty("user_vector", np.float32, user.shape)[...] = user
                return paramserver_pb2.DriftResponse(applied=False, rate=rate)
            moved = item.copy() if created else drift(user, item, rate)
            users.upsert(np.array([request.user_id], dtype=np.int64), moved[None, :])
        outputs.empty("user_vector", np.float32, moved.shape)[...] = moved
        return paramserver_pb2.DriftResponse(applied=True, rate=rate, created=created)

    def snapshot(self, request: paramserver_pb2.SnapshotRequest, tensors: Tensors, outputs: Outputs) -> paramserver_pb2.SnapshotResponse:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"snapshot-{time.time_ns()}.npz"
        arrays, rows = {}, 0
        with self._lock:
            for table_id, table in self.tables.items():
                keys, values = table.items()
                name = paramserver_pb2.Table.Name(table_id).lower()
                arrays[f"{name}_keys"], arrays[f"{name}_values"] = keys, values
                rows += len(keys)
        staging = path.with_suffix(".tmp.npz")
        np.savez(staging, **arrays)
        staging.rename(path)
        return paramserver_pb2.SnapshotResponse(path=str(path), rows=rows)


class ParamServerServicer(paramserver_pb2_grpc.ParamServerServicer):
    """The gRPC face of a ParamServer core."""

    def __init__(self, core: ParamServer) -> None:
        self.core = core

    async def Lookup(self, request: paramserver_pb2.LookupRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.LookupResponse:
        return serve_unary(self.core.lookup, request)

    async def Upsert(self, request: paramserver_pb2.UpsertRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.UpsertResponse:
        return serve_unary(self.core.upsert, request)

    async def Drift(self, request: paramserver_pb2.DriftRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.DriftResponse:
        return serve_unary(self.core.drift, request)

    async def Snapshot(self, request: paramserver_pb2.SnapshotRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.SnapshotResponse:
        return serve_unary(self.core.snapshot, request)
