"""The client's exception tree, and the one place gRPC errors are translated into it.

    SentimentError                 any failure of a call; .code and .message
    ├── InvalidReviewError         INVALID_ARGUMENT: a review the server will not score
    ├── OverloadedError            RESOURCE_EXHAUSTED: the server shed the work
    ├── DeadlineExceededError      DEADLINE_EXCEEDED, or a stream result overdue
    ├── UnavailableError           UNAVAILABLE: no server reachable, or shutting down
    ├── AuthenticationError        UNAUTHENTICATED or PERMISSION_DENIED
    └── ProtocolError              the server's answer broke the API contract

Every other status code raises SentimentError itself, with that code.
"""

from __future__ import annotations

import grpc

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class SentimentError(Exception):
    """A call to the sentiment service failed; `code` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message


class InvalidReviewError(SentimentError):
    """The server refused a review (empty, too long, not text...); the message says which."""


class OverloadedError(SentimentError):
    """The server is at capacity and refused the work rather than queue it."""


class DeadlineExceededError(SentimentError):
    """The call's deadline passed before the server answered."""


class UnavailableError(SentimentError):
    """No server could be reached at the target, or it is shutting down."""


class AuthenticationError(SentimentError):
    """The server did not accept the client's credentials."""


class ProtocolError(SentimentError):
    """The server's response does not match the API (wrong count, unknown stream id...)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.INTERNAL, message)


_CLASS_BY_CODE: dict[grpc.StatusCode, type[SentimentError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidReviewError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
}


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode for a number as the proto's Error carries it (UNKNOWN if none)."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_for_status(code: grpc.StatusCode | int, message: str) -> SentimentError:
    """The exception for a status code, given as grpc.StatusCode or its number (proto Error)."""
    if not isinstance(code, grpc.StatusCode):
        code = status_code(code)
    return _CLASS_BY_CODE.get(code, SentimentError)(code, message)


def from_rpc_error(error: grpc.RpcError) -> SentimentError:
    """Translates a grpc.RpcError (sync or grpc.aio) into the client's exception tree."""
    # Sync errors are also grpc.Call objects and aio errors carry the same two
    # methods; an RpcError without them (raised by grpc itself before a call
    # exists) still becomes an UNKNOWN SentimentError rather than escaping.
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    return error_for_status(code or grpc.StatusCode.UNKNOWN, details or "")
