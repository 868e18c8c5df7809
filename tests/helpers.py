"""Small pieces the server tests share: test reviews, requests, waits, a model kept busy."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import grpc

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2

# Very different lengths: one word, past maxlen (40 for "tiny"), markup, unknown words.
REVIEWS = [
    "great",
    "the movie was awful and boring and the plot a waste " * 12,
    "Loved it.<br /><br />Brilliant, moving and fun!",
    "zzz qqq the film",
    "dull " * 39 + "superb",
    "a wonderful story of an actor who hated the scene",
]


def alone(serving_model, review: str) -> float:
    """The unbatched score: the review scored by itself."""
    return serving_model.predict([review])[0]


def request(*reviews: str) -> sentiment_pb2.PredictRequest:
    return sentiment_pb2.PredictRequest(reviews=list(reviews))


async def until(condition: Callable[[], object], timeout_s: float = 30) -> None:
    """Polls `condition` on the event loop; fails the test if it is still false after timeout_s."""
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s, "condition not reached in time"
        await asyncio.sleep(0.005)


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 20) -> None:
    """Polls `condition` from a plain thread; fails the test naming `what` after timeout_s."""
    pause = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def occupy(stub, model, review: str = "in the model") -> asyncio.Future:
    """Sends `review` on a grpc.aio stub and waits until a held model has it: the model is
    busy and the queue empty. Returns the call, which ends once the test releases the model."""
    first = asyncio.ensure_future(stub.Predict(request(review), timeout=60))
    await until(lambda: model.calls)
    return first


def occupy_blocking(stub, model, review: str = "in the model") -> grpc.Future:
    """`occupy` for a blocking stub: returns the call's future once a held model has `review`."""
    first = stub.Predict.future(request(review), timeout=30)
    wait_until(lambda: model.calls, f"{review!r} is in the model")
    return first
