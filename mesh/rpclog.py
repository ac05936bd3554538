"""The server interceptor: one JSON log line per RPC, and FeedserveError turned into its status."""

from __future__ import annotations

import contextvars
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import structlog

from mesh.errors import FeedserveError
from mesh.logging import get_logger
from mesh.methods import wrap_handler
from mesh.metrics import RPC_SECONDS, RPC_TOTAL
from mesh.tracing import server_span

__all__ = ["RpcLogInterceptor", "annotate", "request_id"]

_fields: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("rpc_fields")
_log = get_logger("rpc")
REQUEST_ID_KEY = "x-request-id"


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
    fields["input_bytes"] = request.ByteSize()
    try:
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
        wrapped = wrap_handler(handler, lambda b: self._unary(b, details), lambda b: self._stream(b, details))
        return wrapped if wrapped is not None else handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, details),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, details),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

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
