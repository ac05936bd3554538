"""The Gateway gRPC servicer: validates, fans out under the caller's deadline, reports every hop."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generator_pb2, paramserver_pb2, ranker_pb2
from mesh.clients import ParamServerClient, RankerClient
from mesh.errors import DeadlineExceeded, InvalidArgument
from mesh.rpclog import annotate, request_id
from mesh.timing import HopRecorder

__all__ = ["GatewayService", "DEFAULT_K", "MAX_K", "DEFAULT_TIMEOUT_S"]

SERVICE = "gateway"
DEFAULT_K = 20
MAX_K = 500
DEFAULT_TIMEOUT_S = 2.0  # for callers that send no deadline
_EVENTS = frozenset(common_pb2.EventType.values()) - {common_pb2.EVENT_TYPE_UNSPECIFIED}


class _Budget:
    """The time left of the caller's deadline (or the default), for each downstream call."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        remaining = context.time_remaining()
        self.deadline = time.monotonic() + (DEFAULT_TIMEOUT_S if remaining is None else remaining)

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("deadline passed before the feed was ready")
        return left


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, paramserver: ParamServerClient, ranker: RankerClient) -> None:
        self.paramserver = paramserver
        self.ranker = ranker

    async def Feed(self, request: gateway_pb2.FeedRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.FeedResponse:
        hops = HopRecorder(SERVICE)
        received = time.monotonic_ns()
        if request.user_id == 0:
            raise InvalidArgument("user_id", "is required")
        k = request.k if request.HasField("k") else DEFAULT_K
        if not 1 <= k <= MAX_K:
            raise InvalidArgument("k", f"expected 1..{MAX_K}, got {k}")
        budget, rid = _Budget(context), request_id()

        with hops.stage("paramserver_call"):
            user = await self.paramserver.user_vector(request.user_id, budget.left(), rid)
        hops.extend(user.hops)
        rank_request = ranker_pb2.RankRequest(context=request.context, user_id=request.user_id, k=k)
        with hops.stage("ranker_call"):
            ranked = await self.ranker.rank(rank_request, user.vector, budget.left(), rid)
        hops.extend(ranked.hops)

        response = gateway_pb2.FeedResponse(
            cold_start=ranked.cold_start, request_id=rid, model_version=f"{ranked.model_name}/{ranked.model_version}"
        )
        for item in ranked.items:
            response.items.append(
                gateway_pb2.FeedItem(
                    item_id=item.item_id, score=item.score, title=item.title, category=item.category, sources=item.sources
                )
            )
        hops.add("handle", received, time.monotonic_ns())
        response.hops.extend(hops.hops)
        annotate(model=ranked.model_name, model_version=ranked.model_version, items=len(response.items))
        return response

    async def Interact(
        self, request: gateway_pb2.InteractRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.InteractResponse:
        if request.user_id == 0:
            raise InvalidArgument("user_id", "is required")
        if request.item_id == 0:
            raise InvalidArgument("item_id", "is required")
        if request.event not in _EVENTS:
            raise InvalidArgument("event", f"unknown event type {request.event}")
        drift = paramserver_pb2.DriftRequest(
            context=request.context, user_id=request.user_id, item_id=request.item_id, event=request.event
        )
        moved = await self.paramserver.drift(drift, _Budget(context).left(), request_id())
        return gateway_pb2.InteractResponse(applied=moved.applied, rate=moved.rate, request_id=request_id())

    async def Generate(
        self, request: generator_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generator_pb2.GenerateChunk]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "generation is not deployed in this stack yet")
        yield generator_pb2.GenerateChunk()  # unreachable; makes this an async generator
