"""Typed clients for the internal services, turning transport failures into FeedserveErrors."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from feedserve.v1 import common_pb2, paramserver_pb2, paramserver_pb2_grpc, ranker_pb2, ranker_pb2_grpc
from mesh.errors import DeadlineExceeded, Unavailable, error_from_status
from mesh.rpclog import REQUEST_ID_KEY
from mesh.server import GRPC_OPTIONS
from mesh.tensors import from_tensor, to_tensor

__all__ = ["ParamServerClient", "RankerClient", "UserVector"]

Metadata = Sequence[tuple[str, str]]


def _translate(service: str, error: grpc.aio.AioRpcError) -> Exception:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(service, error.details() or "connection failed")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{service} did not answer within the deadline")
    return error_from_status(code, error.details() or f"{service} failed")


def _metadata(request_id: str) -> Metadata:
    return ((REQUEST_ID_KEY, request_id),) if request_id else ()


class _Client:
    service = ""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)

    async def close(self) -> None:
        await self.channel.close()


class UserVector:
    """A user's embedding, or None for a user the paramserver does not know (cold start)."""

    def __init__(self, vector: np.ndarray | None, hops: Sequence[common_pb2.HopTiming]) -> None:
        self.vector, self.hops = vector, list(hops)


class ParamServerClient(_Client):
    service = "paramserver"

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.stub = paramserver_pb2_grpc.ParamServerStub(self.channel)

    async def user_vector(self, user_id: int, timeout: float, request_id: str = "") -> UserVector:
        request = paramserver_pb2.LookupRequest(
            table=paramserver_pb2.TABLE_USER, keys=to_tensor(np.array([user_id], dtype=np.int64))
        )
        try:
            response = await self.stub.Lookup(request, timeout=timeout, metadata=_metadata(request_id))
        except grpc.aio.AioRpcError as error:
            raise _translate(self.service, error) from None
        found = from_tensor(response.found, "found", np.uint8)
        values = from_tensor(response.values, "values", np.float32, ndim=2)
        return UserVector(values[0] if found[0] else None, response.hops)

    async def drift(
        self, request: paramserver_pb2.DriftRequest, timeout: float, request_id: str = ""
    ) -> paramserver_pb2.DriftResponse:
        try:
            return await self.stub.Drift(request, timeout=timeout, metadata=_metadata(request_id))
        except grpc.aio.AioRpcError as error:
            raise _translate(self.service, error) from None


class RankerClient(_Client):
    service = "ranker"

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.stub = ranker_pb2_grpc.RankerStub(self.channel)

    async def rank(self, request: ranker_pb2.RankRequest, timeout: float, request_id: str = "") -> ranker_pb2.RankResponse:
        try:
            return await self.stub.Rank(request, timeout=timeout, metadata=_metadata(request_id))
        except grpc.aio.AioRpcError as error:
            raise _translate(self.service, error) from None
