"""The one error hierarchy: every feedserve failure, with the gRPC status it maps to. It sits below every package
that raises it (catalog uses it without importing mesh)."""

from __future__ import annotations

import grpc

__all__ = [
    "FeedserveError",
    "InvalidArgument",
    "NotFound",
    "Unavailable",
    "ResourceExhausted",
    "DeadlineExceeded",
    "Internal",
    "FailedPrecondition",
    "Unauthenticated",
    "PermissionDenied",
    "Unimplemented",
    "error_from_status",
]


class FeedserveError(Exception):
    """Base of every error feedserve raises on purpose; carries its gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidArgument(FeedserveError, ValueError):
    """A request field is missing, malformed or out of range; nothing changed."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(FeedserveError, LookupError):
    """A referenced entity does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class Unavailable(FeedserveError, ConnectionError):
    """A dependency could not be reached; the message names the service."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(f"{service} unavailable: {detail}")
        self.service = service


class ResourceExhausted(FeedserveError):
    """Load was shed, or a queue, budget or quota is full. `retry_after_s`, when set, travels as the
    `retry-after-ms` trailer."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthenticated(FeedserveError):
    """The call carries no API key, or one that is unknown or revoked."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(FeedserveError):
    """The key is valid but may not call this method (its role does not cover the method: gateway/auth.py)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceeded(FeedserveError, TimeoutError):
    """The request's deadline passed before the work could finish."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class FailedPrecondition(FeedserveError):
    """The system is not in a state to serve this request (a feature not configured); the message says what to change."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unimplemented(FeedserveError):
    """The method or feature is not deployed here; the message says how to deploy it."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(FeedserveError):
    """A broken invariant inside feedserve: a bug, reported instead of crashing."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[FeedserveError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, Unavailable, ResourceExhausted, DeadlineExceeded, FailedPrecondition,
                              Unauthenticated, PermissionDenied, Unimplemented, Internal)
}


def error_from_status(code: grpc.StatusCode, message: str) -> FeedserveError:
    """The error class for a status received from another service, keeping its message as is."""
    cls = _BY_CODE.get(code, FeedserveError)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    if cls is FeedserveError:
        error.code = code
    return error
