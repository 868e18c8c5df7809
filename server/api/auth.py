"""Bearer-token authentication (`--auth-token-file`) as a grpc.aio server interceptor.

Every call must carry `authorization: Bearer <token>` metadata, except calls
to the health service, which stays open so that load balancers and
orchestrators can probe without a secret. The token is compared in constant
time (hmac.compare_digest) and is never logged, echoed or put in an error.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc

from server.errors import StartupError

# Probes must work without the token; they reveal only SERVING or NOT_SERVING.
OPEN_SERVICES = ("grpc.health.v1.Health",)
_SCHEME = "bearer"  # RFC 6750: the scheme is case-insensitive, the token is not
_UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def read_token_file(path: Path) -> bytes:
    """The token in `path`: one line of printable ASCII; StartupError naming the file otherwise.

    The error messages name the file and what is wrong, never the token.
    """
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except UnicodeDecodeError:
        raise StartupError(
            f"--auth-token-file {path} is not ASCII text; a token goes in gRPC metadata, "
            "which is printable ASCII"
        ) from None
    except OSError as exc:
        raise StartupError(f"cannot read --auth-token-file {path}: {exc.strerror}") from None
    if not text:
        raise StartupError(f"--auth-token-file {path} is empty")
    if any(not char.isprintable() or char.isspace() for char in text):
        raise StartupError(
            f"--auth-token-file {path} must hold one token: a single word of printable "
            "ASCII, without spaces or line breaks"
        )
    return text.encode("ascii")


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without the right bearer token with UNAUTHENTICATED, before any handler runs.

    A refused call never has its request parsed: its handler is swapped for one
    that takes the raw bytes and aborts.
    """

    def __init__(self, token: bytes, open_services: Sequence[str] = OPEN_SERVICES):
        if not token:
            raise ValueError("the token must not be empty")
        self._token = token
        self._open_services = frozenset(open_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) in self._open_services:
            return handler  # unknown methods stay UNIMPLEMENTED; probes stay open
        problem = self._problem_with(handler_call_details.invocation_metadata or ())
        if problem is None:
            return handler
        return _refusal(handler, problem)

    def _problem_with(self, metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
        """None if an `authorization` value carries the token, else what is wrong."""
        values = [value for key, value in metadata if key.lower() == "authorization"]
        if not values:
            return "this server requires 'authorization: Bearer <token>' metadata; none was sent"
        for value in values:
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            scheme, _, presented = value.strip().partition(" ")
            presented_bytes = presented.strip().encode("utf-8", "replace")
            # compare_digest takes time independent of where the bytes differ (not of length).
            if scheme.lower() == _SCHEME and hmac.compare_digest(presented_bytes, self._token):
                return None
        return "the bearer token in the 'authorization' metadata is not accepted"


def _service_of(method: str | bytes) -> str:
    """'/grpc.health.v1.Health/Check' -> 'grpc.health.v1.Health'."""
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    return method.lstrip("/").partition("/")[0]


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that aborts with UNAUTHENTICATED.

    It takes raw bytes (no deserializer), so a refused request is never parsed.
    A coroutine serves for streaming responses too: grpc.aio awaits it.
    """

    async def refuse(request_or_iterator, context: grpc.aio.ServicerContext) -> None:
        await context.abort(_UNAUTHENTICATED, message)

    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, response_serializer=serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, response_serializer=serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, response_serializer=serializer)
