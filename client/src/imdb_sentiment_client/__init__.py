"""Client library for the sentiment service: `from imdb_sentiment_client import SentimentClient`.

The generated stubs are `imdb_sentiment_client.sentiment.v1` (sentiment_pb2, sentiment_pb2_grpc),
named after the proto package `sentiment.v1`, so a later `v2` can sit beside them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names resolve on first use, so importing only the stubs (as the server does)
# loads neither the clients nor grpc.aio.
_EXPORTS = {
    "SentimentClient": "imdb_sentiment_client.sync_client",
    "AsyncSentimentClient": "imdb_sentiment_client.aio_client",
    "ClientConfig": "imdb_sentiment_client.config",
    "RetryPolicy": "imdb_sentiment_client.config",
    "TlsConfig": "imdb_sentiment_client.config",
    "Prediction": "imdb_sentiment_client.types",
    "StreamResult": "imdb_sentiment_client.types",
    "ModelInfo": "imdb_sentiment_client.types",
    "Explanation": "imdb_sentiment_client.types",
    "Word": "imdb_sentiment_client.types",
    "SentimentError": "imdb_sentiment_client.errors",
    "InvalidReviewError": "imdb_sentiment_client.errors",
    "OverloadedError": "imdb_sentiment_client.errors",
    "DeadlineExceededError": "imdb_sentiment_client.errors",
    "UnavailableError": "imdb_sentiment_client.errors",
    "AuthenticationError": "imdb_sentiment_client.errors",
    "ProtocolError": "imdb_sentiment_client.errors",
}

__all__ = [
    "AsyncSentimentClient",
    "AuthenticationError",
    "ClientConfig",
    "DeadlineExceededError",
    "Explanation",
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
    "Word",
]

if TYPE_CHECKING:
    from imdb_sentiment_client.aio_client import AsyncSentimentClient
    from imdb_sentiment_client.config import ClientConfig, RetryPolicy, TlsConfig
    from imdb_sentiment_client.errors import (
        AuthenticationError,
        DeadlineExceededError,
        InvalidReviewError,
        OverloadedError,
        ProtocolError,
        SentimentError,
        UnavailableError,
    )
    from imdb_sentiment_client.sync_client import SentimentClient
    from imdb_sentiment_client.types import Explanation, ModelInfo, Prediction, StreamResult, Word


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'imdb_sentiment_client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
