"""Typed clients for the internal services, over their ring or gRPC (see mesh/transport.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from errors import Unavailable
from feedserve.v1 import common_pb2, generator_pb2, generator_pb2_grpc, paramserver_pb2, ranker_pb2
from mesh.config import transport_mode
from mesh.grpc_server import GRPC_OPTIONS
from mesh.ring import RingConfig
from mesh.rpclog import REQUEST_ID_KEY
from mesh.security import open_aio_channel
from mesh.shards import SlotMap
from mesh.tensors import expect
from mesh.tracing import current_traceparent
from mesh.transport import Transport, translate_rpc_error

__all__ = ["ParamServerClient", "RankerClient", "GeneratorClient", "UserVector", "ShardedLookup"]


@dataclass
class UserVector:
    """A user's embedding, or None for a user the paramserver does not know (cold start)."""

    vector: np.ndarray | None
    hops: list[common_pb2.HopTiming]


@dataclass
class ShardedLookup:
    """A batch lookup across shards: rows (zeros where missing), found, and keys whose shard was down."""

    values: np.ndarray
    found: np.ndarray
    unavailable: np.ndarray


class ParamServerClient:
    """The paramserver, one shard or many. Users are routed by hash slot; items, which every shard holds,
    are read from the first shard that answers. A batch fans out to its shards in parallel."""

    service = "paramserver"
    descriptor = paramserver_pb2.DESCRIPTOR.services_by_name["ParamServer"]

    def __init__(self, shards: str | SlotMap, use_ring: bool | None = None, config: RingConfig = RingConfig()) -> None:
        self.map = SlotMap.single(shards) if isinstance(shards, str) else shards
        use_ring = transport_mode() != "grpc" if use_ring is None else use_ring
        self.transports = [Transport(f"{self.service}[{span}]" if len(self.map.shards) > 1 else self.service,
                                     address, self.descriptor, use_ring=use_ring, config=config)
                           for span, address in self.map.shards]

    @property
    def transport(self) -> Transport:
        """The single shard's transport (for callers that know there is one)."""
        return self.transports[0]

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()

    async def _lookup_on(self, shard: int, table: int, keys: np.ndarray, timeout: float, request_id: str):
        request = paramserver_pb2.LookupRequest(table=table)  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
        with await self.transports[shard].call("Lookup", request, {"keys": keys}, timeout, request_id) as reply:
            found = expect(reply.tensors, "found", np.uint8, ndim=1, required=True).astype(bool)
            values = expect(reply.tensors, "values", np.float32, ndim=2, required=True).copy()  # out of the slot
            return values, found, list(reply.message.hops)

    async def lookup(self, table: int, keys: np.ndarray, timeout: float, request_id: str = "") -> ShardedLookup:
        """Every key's row; keys of a shard that is down are flagged, the rest still answer."""
        keys = np.asarray(keys, dtype=np.int64)
        values = np.zeros((len(keys), 0), np.float32)
        found = np.zeros(len(keys), bool)
        unavailable = np.zeros(len(keys), bool)
        if table == paramserver_pb2.TABLE_ITEM:  # replicated: one shard answers for all
            last: Exception | None = None
            for shard in range(len(self.transports)):
                try:
                    values, found, _ = await self._lookup_on(shard, table, keys, timeout, request_id)
                    return ShardedLookup(values, found, unavailable)
                except Unavailable as exc:
                    last = exc
            raise last if last is not None else Unavailable(self.service, "no shard holds the item table")
        owner = self.map.shard_of(keys)
        shards = np.unique(owner).tolist()
        results = await asyncio.gather(
            *(self._lookup_on(s, table, keys[owner == s], timeout, request_id) for s in shards), return_exceptions=True)
        for shard, result in zip(shards, results):
            mask = owner == shard
            if isinstance(result, Unavailable):
                unavailable[mask] = True
                continue
            if isinstance(result, BaseException):
                raise result
            part_values, part_found, _ = result
            if values.shape[1] == 0:
                values = np.zeros((len(keys), part_values.shape[1]), np.float32)
            values[mask], found[mask] = part_values, part_found
        if unavailable.all() and len(keys):
            raise Unavailable(self.service, "every shard holding these keys is down")
        return ShardedLookup(values, found, unavailable)

    async def user_vector(self, user_id: int, timeout: float, request_id: str = "") -> UserVector:
        shard = int(self.map.shard_of(np.array([user_id], np.int64))[0])
        values, found, hops = await self._lookup_on(shard, paramserver_pb2.TABLE_USER, np.array([user_id], np.int64),
                                                    timeout, request_id)
        return UserVector(values[0] if found[0] else None, hops)

    async def drift(self, request: paramserver_pb2.DriftRequest, timeout: float, request_id: str = "") -> paramserver_pb2.DriftResponse:
        shard = int(self.map.shard_of(np.array([request.user_id], np.int64))[0])
        with await self.transports[shard].call("Drift", request, None, timeout, request_id) as reply:
            return reply.message


    async def remove(self, table: int, keys: np.ndarray, timeout: float, request_id: str = "") -> int:
        """Remove keys from every shard that may hold them (users: their owner; items: all shards)."""
        keys = np.asarray(keys, dtype=np.int64)
        if table == paramserver_pb2.TABLE_ITEM:
            parts = [(shard, keys) for shard in range(len(self.transports))]
        else:
            owner = self.map.shard_of(keys)
            parts = [(shard, keys[owner == shard]) for shard in np.unique(owner).tolist()]

        async def on(shard: int, part: np.ndarray) -> int:
            request = paramserver_pb2.RemoveRequest(table=table)  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
            with await self.transports[shard].call("Remove", request, {"keys": part}, timeout, request_id) as reply:
                return int(reply.message.removed)

        counts = await asyncio.gather(*(on(shard, part) for shard, part in parts))
        return max(counts) if table == paramserver_pb2.TABLE_ITEM else sum(counts)


class RankerClient:
    service = "ranker"
    descriptor = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"]

    def __init__(self, address: str, use_ring: bool | None = None, config: RingConfig = RingConfig()) -> None:
        use_ring = transport_mode() != "grpc" if use_ring is None else use_ring
        self.transport = Transport(self.service, address, self.descriptor, use_ring=use_ring, config=config)

    async def close(self) -> None:
        await self.transport.close()

    async def rank(self, request: ranker_pb2.RankRequest, user_vector: np.ndarray | None, timeout: float,
                   request_id: str = "") -> ranker_pb2.RankResponse:
        tensors = {"user_vector": user_vector} if user_vector is not None else None
        with await self.transport.call("Rank", request, tensors, timeout, request_id) as reply:
            return reply.message

    async def models(self, timeout: float, request_id: str = "") -> ranker_pb2.ModelsStatus:
        """The versions the ranker holds, what they occupy, and its shadow's figures."""
        with await self.transport.call("Models", ranker_pb2.ModelsRequest(), None, timeout, request_id) as reply:
            return reply.message


class GeneratorClient:
    """The generator's token stream. Streams travel gRPC only: a ring slot holds one reply, not a stream."""

    service = "generator"

    def __init__(self, address: str) -> None:
        self.channel = open_aio_channel(address, options=GRPC_OPTIONS, service=self.service)
        self.stub = generator_pb2_grpc.GeneratorStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def generate(self, request: generator_pb2.GenerateRequest, timeout: float,
                       request_id: str = "") -> AsyncIterator[generator_pb2.GenerateChunk]:
        """Chunks as the generator sends them; failures become FeedserveErrors naming the generator."""
        metadata = tuple((k, v) for k, v in ((REQUEST_ID_KEY, request_id), ("traceparent", current_traceparent())) if v)
        call = self.stub.Generate(request, timeout=timeout, metadata=metadata)
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as error:
            raise translate_rpc_error(self.service, error) from None
        finally:
            call.cancel()  # the caller stopped reading: stop the generator's work too
