"""Who may call what on an internal port: the caller's role, read from its certificate, checked per method.

Every certificate the deployment's CA signs names one role (cli/certificates.py): a SAN URI
`spiffe://feedserve/<role>`. Being signed by the CA only proves the caller belongs to the deployment; the table
below says which role may call which method. A method missing from it is refused to everybody, so a new RPC is
closed until someone decides who needs it (tests/mesh/test_roles.py checks the table against the descriptors).
The public port (the gateway's) is not checked here: its callers prove who they are with API keys. Without TLS
there is no identity to check; plaintext is allowed on loopback only (mesh/security.py).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc

__all__ = ["ROLES", "SERVICE_ROLES", "OPERATOR", "ROLE_URI_PREFIX", "role_uri", "METHOD_ROLES", "role_named", "peer_role",
           "RoleInterceptor"]

SERVICE_ROLES = ("gateway", "paramserver", "ranker", "generator")
OPERATOR = "operator"  # the CLI, `feedserve up`'s readiness checks, benchmarks
ROLES = (*SERVICE_ROLES, OPERATOR)
ROLE_URI_PREFIX = "spiffe://feedserve/"

_ANY = frozenset(ROLES)
_CLIENTS_OF_PARAMSERVER = frozenset({"gateway", "generator", OPERATOR})

# full method path -> the roles that may call it
METHOD_ROLES: Mapping[str, frozenset[str]] = {
    "/feedserve.v1.ParamServer/Lookup": _CLIENTS_OF_PARAMSERVER,
    "/feedserve.v1.ParamServer/Upsert": frozenset({OPERATOR}),  # `up` seeds the users' vectors
    "/feedserve.v1.ParamServer/Drift": frozenset({"gateway"}),  # Interact moves a user's vector
    "/feedserve.v1.ParamServer/Remove": frozenset({"gateway"}),  # DeleteUser
    "/feedserve.v1.ParamServer/Snapshot": frozenset({OPERATOR}),
    "/feedserve.v1.Ranker/Rank": frozenset({"gateway"}),
    "/feedserve.v1.Ranker/Models": frozenset({"gateway", OPERATOR}),
    "/feedserve.v1.Generator/Generate": frozenset({"gateway"}),  # the gateway sets the tenant from the API key
    # the ring's handshake tells a colocated caller the segment: whoever calls the service's unary methods
    "/feedserve.v1.Transport/Handshake": _CLIENTS_OF_PARAMSERVER,
    "/grpc.health.v1.Health/Check": _ANY,
    "/grpc.health.v1.Health/Watch": _ANY,
    "/grpc.health.v1.Health/List": _ANY,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": frozenset({OPERATOR}),
}


def role_uri(role: str) -> str:
    """The SAN URI a certificate of `role` carries."""
    return f"{ROLE_URI_PREFIX}{role}"


def role_named(names: Iterable[str]) -> str:
    """The role a certificate's subject alternative names give: exactly one known role URI, else ''."""
    roles = {name.removeprefix(ROLE_URI_PREFIX) for name in names if name.startswith(ROLE_URI_PREFIX)}
    return roles.pop() if len(roles) == 1 and next(iter(roles)) in ROLES else ""


def peer_role(auth_context: Mapping[str, Any]) -> str:
    """The role the caller's certificate names ('' if it names none, or several)."""
    return role_named(name.decode(errors="replace") for name in auth_context.get("x509_subject_alternative_name", ()))


def _denial(method: str, auth_context: Mapping[str, Any]) -> str:
    """'' if the caller may call `method`, else why not."""
    role = peer_role(auth_context)
    allowed = METHOD_ROLES.get(method)
    if allowed is None:
        return f"{method} is not open to any caller on this port"
    if not role:
        return "the client certificate names no feedserve role (reissue it with `feedserve certs`)"
    if role not in allowed:
        return f"role {role!r} may not call {method} (allowed: {', '.join(sorted(allowed))})"
    return ""


class RoleInterceptor(grpc.aio.ServerInterceptor):
    """Refuses with PERMISSION_DENIED a call whose certificate's role the table does not allow for its method."""

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None  # UNIMPLEMENTED, as without the check
        method = details.method

        async def check(context: grpc.aio.ServicerContext) -> None:
            why = _denial(method, context.auth_context())
            if why:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

        def unary_response(behaviour: Callable) -> Callable:
            async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                return await behaviour(request, context)
            return checked

        def stream_response(behaviour: Callable) -> Callable:
            if not inspect.isasyncgenfunction(behaviour):
                return unary_response(behaviour)  # a coroutine that writes with context.write (health's Watch)

            async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await check(context)
                async for reply in behaviour(request, context):
                    yield reply
            return checked

        kinds = {"unary_unary": (unary_response, grpc.unary_unary_rpc_method_handler),
                 "unary_stream": (stream_response, grpc.unary_stream_rpc_method_handler),
                 "stream_unary": (unary_response, grpc.stream_unary_rpc_method_handler),
                 "stream_stream": (stream_response, grpc.stream_stream_rpc_method_handler)}
        for kind, (wrap, make) in kinds.items():
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return make(wrap(behaviour), request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        return handler
