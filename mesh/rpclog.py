"""The server interceptor: one JSON log line per RPC, and FeedserveError turned into its status.

Every RPC is counted in the metrics. A flood of quota refusals is logged at most `REFUSAL_LINES_PER_S` lines a
second, the next line saying how many were left out: at a flood's rate the lines cost the process more than
the refusals.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from errors import FeedserveError, InvalidArgument
from mesh.logging import get_logger
from mesh.methods import wrap_handler
from mesh.metrics import RPC_SECONDS, RPC_TOTAL
from mesh.tracing import server_span

__all__ = ["RpcLogInterceptor", "annotate", "request_id"]

_fields: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("rpc_fields")
_log = get_logger("rpc")
REQUEST_ID_KEY = "x-request-id"
REFUSAL_LINES_PER_S = 10.0


class _RefusalLines:
    """A token bucket of log lines for RESOURCE_EXHAUSTED answers, and how many it left out since the last line."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self.clock, self.left_out = per_s, clock, 0
        self.tokens, self.stamp = per_s, clock()
        self.lock = threading.Lock()

    def take(self) -> int | None:
        """None: leave this line out; else log it, with the count left out before it."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.per_s, self.tokens + (now - self.stamp) * self.per_s)
            self.stamp = now
            if self.tokens < 1.0:
                self.left_out += 1
                return None
            self.tokens -= 1.0
            left_out, self.left_out = self.left_out, 0
            return left_out


_refusal_lines = _RefusalLines(REFUSAL_LINES_PER_S)


class Unparsed(bytes):
    """A request body that did not parse as its message: answered INVALID_ARGUMENT, not gRPC's UNKNOWN."""

    type_name = "request"


def _parsing(deserializer: Callable | None) -> Callable | None:
    """`deserializer`, but a body that does not parse becomes an Unparsed (bytes) instead of an exception."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            unparsed = Unparsed(data)
            owner = getattr(deserializer, "__self__", None)  # a message class's FromString
            unparsed.type_name = getattr(getattr(owner, "DESCRIPTOR", None), "name", "request")
            return unparsed

    return parse


def annotate(**fields: Any) -> None:
    """Add fields (model name and version, sizes) to the current RPC's log line."""
    current = _fields.get(None)
    if current is not None:
        current.update(fields)


def request_id() -> str:
    """The current RPC's request id, or '' outside an RPC."""
    current = _fields.get(None)
    return current.get("request_id", "") if current is not None else ""


def _begin(details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext) -> dict[str, Any]:
    metadata = dict(context.invocation_metadata() or ())
    fields = {
        "request_id": metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex[:16],
        "method": details.method,
        "status": "OK",
        "traceparent": metadata.get("traceparent", ""),
    }
    _fields.set(fields)
    structlog.contextvars.bind_contextvars(request_id=fields["request_id"])
    return fields


async def _fail(context: grpc.aio.ServicerContext, fields: dict[str, Any], exc: BaseException) -> None:
    if isinstance(exc, FeedserveError):
        fields["status"] = exc.code.name
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:  # a quota: tell the caller when to come back
            context.set_trailing_metadata((("retry-after-ms", str(max(int(retry_after * 1000), 1))),))
        await context.abort(exc.code, str(exc))
    if isinstance(exc, NotImplementedError):  # a generated servicer's method nobody implemented (health's List)
        fields["status"] = "UNIMPLEMENTED"
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{fields['method']} is not implemented by this server")
    fields["status"] = "INTERNAL"
    _log.exception("unhandled error", method=fields["method"])
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


@asynccontextmanager
async def _accounted(fields: dict[str, Any], context: grpc.aio.ServicerContext, request: Any) -> AsyncIterator[None]:
    """The status, sizes and latency of one RPC, whatever way it ends; errors become their status."""
    start = time.perf_counter_ns()
    fields["input_bytes"] = len(request) if isinstance(request, bytes) else request.ByteSize()  # bytes: unparsed
    try:
        if isinstance(request, Unparsed):
            raise InvalidArgument("request", f"not a valid {request.type_name} message ({len(request)} bytes)")
        yield
    except grpc.aio.AbortError:
        fields["status"] = (context.code() or grpc.StatusCode.UNKNOWN).name
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a status (context.abort raises), never swallowed
        await _fail(context, fields, exc)
    finally:
        _finish(fields, start)


def _finish(fields: dict[str, Any], start: int) -> None:
    elapsed = (time.perf_counter_ns() - start) / 1e9
    fields["latency_ms"] = round(elapsed * 1e3, 3)
    RPC_SECONDS.labels(fields["method"]).observe(elapsed)
    RPC_TOTAL.labels(fields["method"], fields["status"]).inc()
    if fields["status"] == "RESOURCE_EXHAUSTED":
        left_out = _refusal_lines.take()
        if left_out is None:
            return
        if left_out:
            fields["refusals_not_logged"] = left_out
    _log.info("rpc", **fields)


class RpcLogInterceptor(grpc.aio.ServerInterceptor):
    """Logs every RPC (request id, method, model, sizes, latency, status) and maps errors."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        wrapped = wrap_handler(handler, lambda b: self._unary(b, details), lambda b: self._stream(b, details), _parsing)
        return wrapped if wrapped is not None else handler

    @staticmethod
    def _unary(behavior: Callable[..., Awaitable[Any]], details: grpc.HandlerCallDetails) -> Callable:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            fields = _begin(details, context)
            async with _accounted(fields, context, request):
                with server_span(details.method, fields.pop("traceparent"), request_id=fields["request_id"]) as span:
                    if span.get_span_context().is_valid:
                        fields["trace_id"] = f"{span.get_span_context().trace_id:032x}"
                    response = await behavior(request, context)
                fields["output_bytes"] = response.ByteSize()
                return response

        return wrapped

    @staticmethod
    def _stream(behavior: Callable[..., AsyncIterator[Any]], details: grpc.HandlerCallDetails) -> Callable:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            fields = _begin(details, context)
            traceparent = fields.pop("traceparent")
            fields["output_bytes"] = 0
            async with _accounted(fields, context, request):
                with server_span(details.method, traceparent, request_id=fields["request_id"]) as span:
                    if span.get_span_context().is_valid:
                        fields["trace_id"] = f"{span.get_span_context().trace_id:032x}"
                    stream = behavior(request, context)
                    if inspect.isawaitable(stream):  # a handler that writes with context.write (Health.Watch)
                        await stream
                        return
                    async for message in stream:
                        fields["output_bytes"] += message.ByteSize()
                        yield message

        return wrapped
