"""The public port's door: an API key on every call, of a role that covers the method (read, write, admin), the
tenant taken from the key (never from the body), and the tenant's quota. Health and reflection stay open for probes."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from errors import FeedserveError, PermissionDenied, Unauthenticated
from gateway.keys import ApiKey, KeyStore, parse_bearer
from gateway.quotas import TenantQuotas
from mesh.methods import wrap_handler

__all__ = ["ApiKeyInterceptor", "OPEN_SERVICES", "READ_METHODS", "WRITE_METHODS", "events_keep_their_time",
           "role_needed"]

# Whether this call's timestamped events are judged by their own clock (a backfill of real history): an admin key's
# are; a read or write key's are live. A gateway that checks no keys (--no-auth, loopback) trusts every caller.
_backfill: contextvars.ContextVar[bool] = contextvars.ContextVar("backfill", default=True)


def events_keep_their_time() -> bool:
    """True when the current call may date its events for the drift guardrails (see _backfill)."""
    return _backfill.get()

OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection"})
# What a read key may call: it asks and changes nothing.
READ_METHODS = frozenset({
    "/feedserve.v1.Gateway/Feed",
    "/feedserve.v1.Gateway/Generate",
    "/feedserve.v1.GatewayAdmin/GetMode",
})
# What a write key may call besides: a product's backend sending what its users do and what its catalog holds.
WRITE_METHODS = frozenset({
    "/feedserve.v1.Gateway/Interact",
    "/feedserve.v1.Catalog/InteractBatch",
    "/feedserve.v1.Catalog/UpsertItems",
    "/feedserve.v1.Catalog/UpsertUsers",
})


def role_needed(method: str) -> str:
    """The least role that may call `method` (its full name). Everything else is admin's: deletes (the catalog is
    one per deployment, so a delete touches what every tenant sees), keys, models, modes and costs, and any method
    added later until it is placed here."""
    if method in READ_METHODS:
        return "read"
    if method in WRITE_METHODS:
        return "write"
    return "admin"


def _set_tenant(request: Any, tenant: str) -> None:
    """Overwrite the request's context.tenant with the key's: the body never chooses who is billed."""
    try:
        context = request.context
    except AttributeError:
        return
    if hasattr(context, "tenant"):
        context.tenant = tenant


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED without a live key, PERMISSION_DENIED when the key's role does not cover the method, then
    the tenant's quota (RESOURCE_EXHAUSTED with retry-after-ms)."""

    def __init__(self, keys: KeyStore, quotas: TenantQuotas | None = None) -> None:
        self.keys = keys
        self.quotas = quotas or TenantQuotas()

    async def _authorise(self, method: str, invocation_metadata: Any) -> ApiKey:
        metadata = dict(invocation_metadata or ())
        header = metadata.get("authorization", "")
        token = parse_bearer(header) if isinstance(header, str) else None
        if token is None:
            raise Unauthenticated("missing API key: send the metadata `authorization: Bearer <key>`")
        judged, key = self.keys.cached(token)
        if not judged:  # a key id this gateway has not looked up yet: the store, off the event loop
            key = await asyncio.get_running_loop().run_in_executor(None, self.keys.verify, token)
        if key is None:
            raise Unauthenticated("unknown or revoked API key")
        needed = role_needed(method)
        if not key.may(needed):
            raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} needs a key with the {needed} role; "
                                   f"key {key.key_id} of tenant {key.tenant} has the {key.role} role")
        return key

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES:
            return handler
        # The key, its role and its tenant's quota are checked from the metadata alone: a refused call (a flood past
        # its quota, a forged key) is answered before its request is parsed, which a large one makes costly.
        refusal: FeedserveError | None
        try:
            key = await self._authorise(method, details.invocation_metadata)
            refusal = self.quotas.refusal(key.tenant)
        except FeedserveError as exc:
            refusal = exc
        if refusal is not None:
            return _refusing(handler, refusal)
        wrapped = wrap_handler(handler, lambda b: self._unary(b, key), lambda b: self._stream(b, key))
        if wrapped is None:
            raise TypeError(f"{method}: client-streaming methods are not served behind API keys")
        return wrapped

    def _admit(self, key: ApiKey, request: Any) -> Callable[[], None]:
        """The key's tenant written into the request, and a place in its quota; returns the release."""
        _backfill.set(key.admin)
        _set_tenant(request, key.tenant)
        return self.quotas.admit(key.tenant)

    def _unary(self, behavior: Callable[..., Awaitable[Any]], key: ApiKey) -> Callable:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            release = self._admit(key, request)
            try:
                return await behavior(request, context)
            finally:
                release()

        return wrapped

    def _stream(self, behavior: Callable[..., AsyncIterator[Any]], key: ApiKey) -> Callable:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            release = self._admit(key, request)
            try:
                async for message in behavior(request, context):
                    yield message
            finally:
                release()

        return wrapped


def _refusing(handler: grpc.RpcMethodHandler, refusal: FeedserveError) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s kind that answers `refusal` without parsing the request (it stays bytes)."""
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> Any:
        raise refusal

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        raise refusal
        yield  # an async generator, as the served stream is

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(unary, response_serializer=handler.response_serializer)

