"""The server's interceptors wrap each method's handler once, not on every call."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc

from server.api.decoding import DecodeErrorInterceptor
from server.api.interceptor import CallObserver
from server.observability.metrics import ServerMetrics


async def _echo(request, context):
    return request


def _details(method: str) -> SimpleNamespace:
    return SimpleNamespace(method=method, invocation_metadata=())  # grpc's HandlerCallDetails


def _intercept(interceptor, handler, method):
    async def continuation(_details):
        return handler

    return asyncio.run(interceptor.intercept_service(continuation, _details(method)))


def test_each_interceptor_reuses_its_wrapper_while_the_handler_is_the_same():
    interceptors = (
        CallObserver(ServerMetrics(max_batch_size=8), slow_call_ms=0),
        DecodeErrorInterceptor(),
    )
    for interceptor in interceptors:
        handler = grpc.unary_unary_rpc_method_handler(_echo, request_deserializer=bytes)
        first = _intercept(interceptor, handler, "/s.S/A")
        assert first is not handler  # it did wrap
        assert _intercept(interceptor, handler, "/s.S/A") is first
        # Another method, or a new handler for the same method, gets its own wrapper.
        other_method = _intercept(interceptor, handler, "/s.S/B")
        assert other_method is not first
        replaced = grpc.unary_unary_rpc_method_handler(_echo, request_deserializer=bytes)
        assert _intercept(interceptor, replaced, "/s.S/A") not in (first, other_method)
        assert _intercept(interceptor, None, "/s.S/C") is None
