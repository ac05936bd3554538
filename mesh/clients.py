"""Typed clients for the internal services, over their ring or gRPC (see mesh/transport.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feedserve.v1 import common_pb2, paramserver_pb2, ranker_pb2
from mesh.config import transport_mode
from mesh.ring import RingConfig
from mesh.tensors import expect
from mesh.transport import Transport

__all__ = ["ParamServerClient", "RankerClient", "UserVector"]


@dataclass
class UserVector:
    """A user's embedding, or None for a user the paramserver does not know (cold start)."""

    vector: np.ndarray | None
    hops: list[common_pb2.HopTiming]


class _Client:
    service = ""
    descriptor = None

    def __init__(self, address: str, use_ring: bool | None = None, config: RingConfig = RingConfig()) -> None:
        use_ring = transport_mode() != "grpc" if use_ring is None else use_ring
        self.transport = Transport(self.service, address, self.descriptor, use_ring=use_ring, config=config)

    async def close(self) -> None:
        await self.transport.close()


class ParamServerClient(_Client):
    service = "paramserver"
    descriptor = paramserver_pb2.DESCRIPTOR.services_by_name["ParamServer"]

    async def user_vector(self, user_id: int, timeout: float, request_id: str = "") -> UserVector:
        keys = np.array([user_id], dtype=np.int64)
        request = paramserver_pb2.LookupRequest(table=paramserver_pb2.TABLE_USER)
        with await self.transport.call("Lookup", request, {"keys": keys}, timeout, request_id) as reply:
            found = expect(reply.tensors, "found", np.uint8, ndim=1, required=True)
            values = expect(reply.tensors, "values", np.float32, ndim=2, required=True)
            vector = values[0].copy() if found[0] else None  # copied out: the slot is released on exit
            return UserVector(vector, list(reply.message.hops))

    async def drift(self, request: paramserver_pb2.DriftRequest, timeout: float, request_id: str = "") -> paramserver_pb2.DriftResponse:
        with await self.transport.call("Drift", request, None, timeout, request_id) as reply:
            return reply.message


class RankerClient(_Client):
    service = "ranker"
    descriptor = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"]

    async def rank(self, request: ranker_pb2.RankRequest, user_vector: np.ndarray | None, timeout: float,
                   request_id: str = "") -> ranker_pb2.RankResponse:
        tensors = {"user_vector": user_vector} if user_vector is not None else None
        with await self.transport.call("Rank", request, tensors, timeout, request_id) as reply:
            return reply.message
