"""Client library for the sentiment service: `from client import SentimentClient`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names resolve on first use, so `from client import sentiment_pb2` (as the
# server does) loads only the stubs, not the clients and grpc.aio.
_EXPORTS = {
    "SentimentClient": "client.sync_client",
    "AsyncSentimentClient": "client.aio_client",
    "ClientConfig": "client.config",
    "RetryPolicy": "client.config",
    "TlsConfig": "client.config",
    "Prediction": "client.types",
    "StreamResult": "client.types",
    "ModelInfo": "client.types",
    "SentimentError": "client.errors",
    "InvalidReviewError": "client.errors",
    "OverloadedError": "client.errors",
    "DeadlineExceededError": "client.errors",
    "UnavailableError": "client.errors",
    "AuthenticationError": "client.errors",
    "ProtocolError": "client.errors",
}

__all__ = [
    "AsyncSentimentClient",
    "AuthenticationError",
    "ClientConfig",
    "DeadlineExceededError",
    "InvalidReviewError",
    "ModelInfo",
    "OverloadedError",
    "Prediction",
    "ProtocolError",
    "RetryPolicy",
    "SentimentClient",
    "SentimentError",
    "StreamResult",
    "TlsConfig",
    "UnavailableError",
]

if TYPE_CHECKING:
    from client.aio_client import AsyncSentimentClient
    from client.config import ClientConfig, RetryPolicy, TlsConfig
    from client.errors import (
        AuthenticationError,
        DeadlineExceededError,
        InvalidReviewError,
        OverloadedError,
        ProtocolError,
        SentimentError,
        UnavailableError,
    )
    from client.sync_client import SentimentClient
    from client.types import ModelInfo, Prediction, StreamResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
