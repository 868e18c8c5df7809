"""Small pieces the server tests share: test reviews, Predict requests, waiting on a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from client import sentiment_pb2

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


async def occupy(stub, model) -> asyncio.Future:
    """Sends the review "in the model" and waits until a held model has it: the model is busy
    and the queue empty. Returns the call, which finishes once the test releases the model."""
    first = asyncio.ensure_future(stub.Predict(request("in the model"), timeout=60))
    await until(lambda: model.calls)
    return first
