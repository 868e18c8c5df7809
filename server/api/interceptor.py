"""The call observer: a gRPC server interceptor giving each call a request id, metrics and logs.

Every call gets a request id (the caller's `x-request-id` metadata if it sent
a usable one, else a fresh one) in the `server.observability.logs.request_id` context
variable, so every line logged during the call carries it. When the call
ends it is counted by method and status code and timed; a failed call, or a
unary call slower than `slow_call_ms`, gets one log line. Review text is
never logged: only the method, the code, the time and the status message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from server.api.handler_cache import HandlerCache
from server.observability.logs import request_id
from server.observability.metrics import ServerMetrics

logger = logging.getLogger("server.calls")

REQUEST_ID_KEY = "x-request-id"
# A caller's id goes into log lines as is, so only plain tokens are taken (no newlines).
_USABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Codes that mean the server (not the caller) has a problem: logged as errors.
_SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


def request_id_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The caller's usable x-request-id, or a new random one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _USABLE_REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


class CallObserver(grpc.aio.ServerInterceptor):
    """Wraps every method handler: request id, started/handled counters, latency, logs."""

    def __init__(self, metrics: ServerMetrics, slow_call_ms: float):
        self._metrics = metrics
        self._slow_call_s = slow_call_ms / 1000 if slow_call_ms > 0 else None
        # With a token, each refused call brings a new handler and a rebuilt wrapper: only
        # accepted calls share the cached one, which is all the saving is for.
        self._handlers = HandlerCache(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED itself
            return None
        return self._handlers.wrapped(handler, handler_call_details.method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            wrap, kind, behavior = grpc.unary_unary_rpc_method_handler, "unary", handler.unary_unary
        elif handler.unary_stream:
            wrap, kind = grpc.unary_stream_rpc_method_handler, "server_stream"
            behavior = handler.unary_stream
        elif handler.stream_unary:
            wrap, kind = grpc.stream_unary_rpc_method_handler, "client_stream"
            behavior = handler.stream_unary
        else:
            wrap, kind, behavior = (
                grpc.stream_stream_rpc_method_handler,
                "bidi_stream",
                handler.stream_stream,
            )
        return wrap(
            self._observed(behavior, kind, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _observed(self, behavior: Callable, kind: str, method: str) -> Callable:
        # gRPC runs an async generator as a response stream and awaits anything
        # else (which writes with context.write), so the wrapper keeps the kind.
        if inspect.isasyncgenfunction(behavior):

            async def observed_stream(request, context):
                call = self._start(kind, method, context)
                error = None
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._finish(call, context, error)

            return observed_stream

        async def observed(request, context):
            call = self._start(kind, method, context)
            error = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finish(call, context, error)

        return observed

    def _start(self, kind: str, method: str, context: grpc.aio.ServicerContext) -> _Call:
        call = _Call(kind, method, request_id_of(context.invocation_metadata()), time.monotonic())
        request_id.set(call.request_id)  # this call's context only: each call has its own
        self._metrics.call_started(kind, method)
        return call

    def _finish(self, call: _Call, context, error: BaseException | None) -> None:
        duration_s = time.monotonic() - call.started_s
        code = _final_code(context, error)
        self._metrics.call_finished(call.kind, call.method, code.name, duration_s)
        fields = {
            "method": call.method,
            "code": code.name,
            "duration_ms": round(1000 * duration_s, 1),
            "request_id": call.request_id,
        }
        if code is not grpc.StatusCode.OK:
            level = logging.ERROR if code in _SERVER_FAULTS else logging.WARNING
            if code is grpc.StatusCode.CANCELLED:
                level = logging.INFO  # the caller left: routine for streams and watches
            logger.log(level, "call failed: %s", _details(context, error), extra=fields)
        elif (
            self._slow_call_s is not None
            and call.kind == "unary"
            and duration_s >= self._slow_call_s
        ):
            logger.warning("slow call", extra=fields)
        else:
            logger.debug("call done", extra=fields)


@dataclass(frozen=True)
class _Call:
    kind: str  # unary, server_stream, client_stream or bidi_stream
    method: str  # "/package.Service/Method"
    request_id: str
    started_s: float  # time.monotonic()


def _final_code(context, error: BaseException | None) -> grpc.StatusCode:
    """The status the caller sees: set by abort/set_code, else implied by how the handler ended."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):  # the call was cut short
        remaining_s = context.time_remaining()
        if remaining_s is not None and remaining_s <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if code is not None:
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


def _details(context, error: BaseException | None) -> str:
    details = context.details()
    if details:
        return details.decode() if isinstance(details, bytes) else str(details)
    return type(error).__name__ if error is not None else ""
