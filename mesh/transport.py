"""Reaching one service: over its shared-memory ring when colocated, over gRPC otherwise."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from errors import DeadlineExceeded, Unavailable, error_from_status
from feedserve.v1 import transport_pb2
from mesh.grpc_server import GRPC_OPTIONS
from mesh.logging import get_logger
from mesh.methods import Tensors, join, methods_of, split
from mesh.ring import RING_VERSION, Reply, RingBroken, RingChannel, RingConfig, RingTooSmall, boot_id
from mesh.rpclog import REQUEST_ID_KEY
from mesh.security import open_aio_channel
from mesh.tracing import current_traceparent

__all__ = ["Transport", "translate_rpc_error"]

_log = get_logger("transport")
_HANDSHAKE = "/feedserve.v1.Transport/Handshake"


def translate_rpc_error(service: str, error: grpc.aio.AioRpcError) -> Exception:
    """A FeedserveError for a failed gRPC call to `service`; UNAVAILABLE names the service."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(service, error.details() or "connection failed")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{service} did not answer within the deadline")
    return error_from_status(code, error.details() or f"{service} failed")


def _request_id_number(request_id: str) -> int:
    try:
        return int(request_id, 16) & 0xFFFF_FFFF_FFFF_FFFF
    except ValueError:
        return hash(request_id) & 0xFFFF_FFFF_FFFF_FFFF


class Transport:
    """Calls the unary methods of one service. Same method names and messages on both paths.

    The ring is found by a gRPC handshake on first use. When it breaks (peer dead, closing,
    corrupt), the call in hand fails over to gRPC and the ring is looked up again after
    `reattach_s`. `use_ring=False` forces gRPC, so that both paths can be compared.
    """

    def __init__(
        self,
        service: str,
        address: str,
        descriptor: ServiceDescriptor,
        use_ring: bool = True,
        config: RingConfig = RingConfig(),
        reattach_s: float = 1.0,
    ) -> None:
        self.service = service
        self.address = address
        self.use_ring = use_ring
        self.config = config
        self.reattach_s = reattach_s
        # the server must hold its own service's certificate: "paramserver[0-8191]" is served by a "paramserver"
        self.channel = open_aio_channel(address, options=GRPC_OPTIONS, service=service.partition("[")[0])
        self.methods = methods_of(descriptor)
        self._unary = {
            name: self.channel.unary_unary(
                m.path, request_serializer=m.request_type.SerializeToString, response_deserializer=m.response_type.FromString
            )
            for name, m in self.methods.items()
        }
        self._paths = [m.path for m in sorted(self.methods.values(), key=lambda m: m.ident)]
        self._handshake = self.channel.unary_unary(
            _HANDSHAKE,
            request_serializer=transport_pb2.HandshakeRequest.SerializeToString,
            response_deserializer=transport_pb2.HandshakeResponse.FromString,
        )
        self._ring: RingChannel | None = None
        self._retry_at = 0.0
        # ring calls block (GIL released) in these threads so that the event loop keeps running
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"ring-{service}")
        self.calls = {"ring": 0, "grpc": 0, "failover": 0}

    @property
    def path(self) -> str:
        """"ring" while a ring is attached, else "grpc"."""
        return "ring" if self._ring is not None else "grpc"

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._ring = None
        await self.channel.close()

    async def call(
        self,
        name: str,
        request: Message,
        tensors: Tensors | None = None,
        timeout: float = 2.0,
        request_id: str = "",
        traceparent: str = "",
    ) -> Reply:
        """One unary call. On the ring, the reply's tensors are slot views until `reply.release()`."""
        method = self.methods[name]
        tensors = tensors or {}
        traceparent = traceparent or current_traceparent()  # the next hop joins the caller's trace
        deadline = time.monotonic() + timeout
        ring = await self._attached(deadline)
        if ring is not None:
            tag = request.context.feature_tag if request.DESCRIPTOR.fields_by_name.get("context") else ""
            work = functools.partial(
                ring.call, method, request, tensors, max(deadline - time.monotonic(), 0.0),
                _request_id_number(request_id), traceparent, tag,
            )
            try:
                reply = await asyncio.get_running_loop().run_in_executor(self._executor, work)
                self.calls["ring"] += 1
                return reply
            except RingTooSmall:
                pass  # this call only: too big for a slot
            except RingBroken as exc:
                self._detach(str(exc))
                self.calls["failover"] += 1
        return await self._grpc(name, request, tensors, deadline, request_id, traceparent)

    async def _grpc(self, name: str, request: Message, tensors: Tensors, deadline: float,
                    request_id: str, traceparent: str) -> Reply:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"no time left to call {self.service}")
        metadata: Sequence[tuple[str, str]] = tuple(
            (k, v) for k, v in ((REQUEST_ID_KEY, request_id), ("traceparent", traceparent)) if v
        )
        try:
            response = await self._unary[name](join(request, tensors), timeout=left, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise translate_rpc_error(self.service, error) from None
        self.calls["grpc"] += 1
        return Reply(response, split(response))

    async def _attached(self, deadline: float) -> RingChannel | None:
        if not self.use_ring or self._ring is not None:
            return self._ring
        now = time.monotonic()
        if now < self._retry_at:
            return None
        self._retry_at = now + self.reattach_s  # set before awaiting: one handshake at a time
        try:
            hello = await self._handshake(
                transport_pb2.HandshakeRequest(boot_id=boot_id()), timeout=max(min(0.5, deadline - now), 0.001)
            )
        except grpc.aio.AioRpcError:
            return None  # no handshake service, or the peer is down: gRPC answers (or fails) for this call
        if not hello.segment or hello.boot_id != boot_id() or hello.ring_version != RING_VERSION:
            return None
        if list(hello.methods) != self._paths:
            _log.warning("ring contract differs; using gRPC", service=self.service, theirs=list(hello.methods))
            return None
        try:
            self._ring = RingChannel(self.service, hello.segment, self.config)
        except (OSError, ValueError) as exc:
            _log.info("ring not attachable; using gRPC", service=self.service, segment=hello.segment, reason=str(exc))
            return None
        _log.info("ring attached", service=self.service, segment=hello.segment, lane=self._ring.ring.lane)
        return self._ring

    def _detach(self, reason: str) -> None:
        """Drop the ring; in-flight calls and live replies keep the mapping until they finish."""
        if self._ring is not None:
            _log.warning("ring failed; failing over to gRPC", service=self.service, reason=reason)
            self._ring = None
            self._retry_at = time.monotonic() + self.reattach_s
