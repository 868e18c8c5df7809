"""Per method, the wrapper an interceptor built for the handler it was given, built once.

grpc.aio asks every interceptor for a handler on every call. The handler it is
given for a method is normally the same object each time, so the wrapper is too:
built on the first call, rebuilt only when the handler it wraps changes (an
interceptor further in may hand out a new one, e.g. a refusal; compared by
identity). Per-call state must come from the call's context, never the wrapper.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

Wrap = Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler]


class HandlerCache:
    def __init__(self, wrap: Wrap) -> None:
        self._wrap = wrap
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrapped(self, handler: grpc.RpcMethodHandler, method: str | bytes) -> grpc.RpcMethodHandler:
        """The wrapper of `handler`, the method's cached one while `handler` is unchanged."""
        name = method.decode("ascii", "replace") if isinstance(method, bytes) else method
        cached = self._by_method.get(name)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._wrap(handler, name))
            self._by_method[name] = cached
        return cached[1]
