"""The ParamServer gRPC servicer: Lookup, Upsert, Drift and Snapshot over the embedding tables."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np

from feedserve.v1 import common_pb2, paramserver_pb2, paramserver_pb2_grpc
from mesh.errors import InvalidArgument, NotFound
from mesh.tensors import check_finite, from_tensor, to_tensor
from mesh.timing import HopRecorder
from paramserver.drift import DEFAULT_RATES, drift
from paramserver.store import EmbeddingTable
from world import World

__all__ = ["ParamServerService", "MAX_BATCH"]

MAX_BATCH = 100_000
SERVICE = "paramserver"


class ParamServerService(paramserver_pb2_grpc.ParamServerServicer):
    """Holds the user and item tables of one world; every write is validated before it lands."""

    def __init__(self, world: World, state_dir: Path, rates: dict[int, float] | None = None) -> None:
        self.tables = {
            paramserver_pb2.TABLE_USER: EmbeddingTable.from_dense(world.user_ids, np.asarray(world.user_tastes)),
            paramserver_pb2.TABLE_ITEM: EmbeddingTable.from_dense(world.item_ids, np.asarray(world.item_embeddings)),
        }
        self.dim = world.spec.dim
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self.state_dir = state_dir

    def _table(self, table: int) -> EmbeddingTable:
        if table not in self.tables:
            raise InvalidArgument("table", f"unknown table {table}")
        return self.tables[table]

    def _keys(self, tensor: common_pb2.Tensor) -> np.ndarray:
        keys = from_tensor(tensor, "keys", np.int64, ndim=1)
        if len(keys) > MAX_BATCH:
            raise InvalidArgument("keys", f"at most {MAX_BATCH} keys per call, got {len(keys)}")
        return keys

    async def Lookup(self, request: paramserver_pb2.LookupRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.LookupResponse:
        hops = HopRecorder(SERVICE)
        with hops.stage("lookup"):
            table = self._table(request.table)
            values, found = table.lookup(self._keys(request.keys))
            response = paramserver_pb2.LookupResponse(
                values=to_tensor(values, "values"), found=to_tensor(found.astype(np.uint8), "found")
            )
        response.hops.extend(hops.hops)
        return response

    async def Upsert(self, request: paramserver_pb2.UpsertRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.UpsertResponse:
        table = self._table(request.table)
        keys = self._keys(request.keys)
        values = from_tensor(request.values, "values", np.float32, ndim=2)
        if values.shape != (len(keys), self.dim):
            raise InvalidArgument("values.shape", f"expected [{len(keys)}, {self.dim}], got {list(values.shape)}")
        if (keys <= 0).any():
            raise InvalidArgument("keys", "keys are expected to be positive")
        check_finite(values, "values")
        table.upsert(keys, values)
        return paramserver_pb2.UpsertResponse(upserted=len(keys))

    async def Drift(self, request: paramserver_pb2.DriftRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.DriftResponse:
        if request.user_id == 0:
            raise InvalidArgument("user_id", "is required")
        if request.item_id == 0:
            raise InvalidArgument("item_id", "is required")
        if request.event not in self.rates:
            raise InvalidArgument("event", f"unknown event type {request.event}")
        item = self.tables[paramserver_pb2.TABLE_ITEM].get(request.item_id)
        if item is None:
            raise NotFound(f"item_id {request.item_id} not found")
        users = self.tables[paramserver_pb2.TABLE_USER]
        rate = self.rates[request.event]
        user = users.get(request.user_id)
        created = user is None
        if created:
            if rate <= 0:  # nothing to learn about a stranger from a negative event
                return paramserver_pb2.DriftResponse(applied=False, rate=rate)
            moved = item.copy()
        elif rate == 0:
            return paramserver_pb2.DriftResponse(applied=False, rate=rate, user_vector=to_tensor(user))
        else:
            moved = drift(user, item, rate)
        users.upsert(np.array([request.user_id], dtype=np.int64), moved[None, :])
        return paramserver_pb2.DriftResponse(applied=True, rate=rate, user_vector=to_tensor(moved), created=created)

    async def Snapshot(self, request: paramserver_pb2.SnapshotRequest, context: grpc.aio.ServicerContext) -> paramserver_pb2.SnapshotResponse:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"snapshot-{time.time_ns()}.npz"
        arrays, rows = {}, 0
        for table_id, table in self.tables.items():
            keys, values = table.items()
            name = paramserver_pb2.Table.Name(table_id).lower()
            arrays[f"{name}_keys"], arrays[f"{name}_values"] = keys, values
            rows += len(keys)
        staging = path.with_suffix(".tmp.npz")
        np.savez(staging, **arrays)
        staging.rename(path)
        return paramserver_pb2.SnapshotResponse(path=str(path), rows=rows)
