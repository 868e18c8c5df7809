"""Requests whose bytes do not parse (e.g. invalid UTF-8 in a string) get INVALID_ARGUMENT.

Left alone, grpc.aio answers a request its deserializer cannot parse with
UNKNOWN "Unexpected DecodeError". This interceptor wraps every method's
deserializer so that a parse failure becomes a marker value, and its handler
so that the marker ends the call with INVALID_ARGUMENT naming the message
and the fault. Messages of a stream that came before the bad one are
answered first. The server itself is never at risk: each call fails alone.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc

from server.api.handler_cache import HandlerCache
from server.api.servicer import status_of
from server.errors import InvalidRequestError


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request message that failed to parse; `reason` is the parser's."""

    reason: str


class UndecodableRequestError(InvalidRequestError):
    """A request message is not a valid protobuf of its type."""


class DecodeErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns a request that does not parse into INVALID_ARGUMENT instead of UNKNOWN."""

    def __init__(self) -> None:
        self._handlers = HandlerCache(_tolerant_handler)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._handlers.wrapped(handler, handler_call_details.method)


def _tolerant_handler(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    if handler.request_deserializer is None:
        return handler
    kinds = (handler.unary_unary, handler.unary_stream, handler.stream_unary)
    behaviour = next(b for b in (*kinds, handler.stream_stream) if b is not None)
    if not (inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)):
        return handler  # a sync handler runs on a thread; this wrapper is for async ones
    return _wrapped(handler, method)


def _tolerant(parse: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except Exception as exc:  # protobuf's DecodeError, or whatever a custom parser raises
            return Undecodable(str(exc) or type(exc).__name__)

    return deserialize


def _error(method: str, reason: str, index: int | None = None) -> UndecodableRequestError:
    which = "the request" if index is None else f"stream message {index}"
    return UndecodableRequestError(
        f"{which} to {method} is not a valid protobuf message ({reason}); "
        "strings must be valid UTF-8"
    )


async def _abort(context: grpc.aio.ServicerContext, error: UndecodableRequestError) -> None:
    code, message, trailers = status_of(error)
    await context.abort(code, message, trailing_metadata=trailers)


def _wrapped(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """`handler` with a tolerant deserializer and a behaviour that refuses the marker."""
    deserializer = _tolerant(handler.request_deserializer)
    serializer = handler.response_serializer
    if handler.request_streaming:
        behaviour = handler.stream_stream or handler.stream_unary

        async def checked(requests: AsyncIterator) -> AsyncIterator:
            index = 0
            async for request in requests:
                if isinstance(request, Undecodable):
                    raise _error(method, request.reason, index)
                yield request
                index += 1

        if inspect.isasyncgenfunction(behaviour):

            async def stream_behaviour(requests, context):
                try:
                    async for response in behaviour(checked(requests), context):
                        yield response
                except UndecodableRequestError as error:
                    await _abort(context, error)

        else:

            async def stream_behaviour(requests, context):
                try:
                    return await behaviour(checked(requests), context)
                except UndecodableRequestError as error:
                    await _abort(context, error)

        make = (
            grpc.stream_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.stream_unary_rpc_method_handler
        )
        return make(
            stream_behaviour, request_deserializer=deserializer, response_serializer=serializer
        )

    behaviour = handler.unary_stream or handler.unary_unary
    if inspect.isasyncgenfunction(behaviour):

        async def unary_behaviour(request, context):
            if isinstance(request, Undecodable):
                await _abort(context, _error(method, request.reason))
            async for response in behaviour(request, context):
                yield response

    else:

        async def unary_behaviour(request, context):
            if isinstance(request, Undecodable):
                await _abort(context, _error(method, request.reason))
            return await behaviour(request, context)

    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.response_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return make(unary_behaviour, request_deserializer=deserializer, response_serializer=serializer)
