"""Cancellation: callers that give up free their queued reviews, and the batcher never gets stuck.

Ray Serve's ray#50046 was a batcher hung after client cancellations; these tests cancel
hundreds of calls in flight and abandon streams half-way, then check that the server still
answers normally and that its queue is empty.
"""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2_grpc as stubs
from tests.helpers import occupy, request, until
from tests.model_spies import CountingModel, GatedModel

UNARY_CALLS = 300
STREAMS = 20
REVIEWS_PER_STREAM = 10  # written, never half-closed: the stream is abandoned half-way


async def _cancel_everything_queued(running, model: GatedModel) -> dict:
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = stubs.SentimentServiceStub(channel)
        first = await occupy(stub, model)
        calls = [
            stub.Predict(request(*[f"gone {i} {k}" for k in range(1 + i % 3)]), timeout=60)
            for i in range(UNARY_CALLS)
        ]
        unary_reviews = sum(1 + i % 3 for i in range(UNARY_CALLS))
        await until(lambda: running.server.stats().queue_depth == unary_reviews)
        streams = [stub.StreamPredict(timeout=60) for _ in range(STREAMS)]
        for s, stream in enumerate(streams):
            for i in range(REVIEWS_PER_STREAM):
                await stream.write(
                    sentiment_pb2.StreamPredictRequest(id=str(i), review=f"left {s} {i}")
                )
        queued = unary_reviews + STREAMS * REVIEWS_PER_STREAM
        await until(lambda: running.server.stats().queue_depth == queued)

        for call in [*calls, *streams]:
            call.cancel()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        # The server sees every cancellation: no review of a caller that left is waiting.
        await until(lambda: running.server.stats().queue_depth == 0)

        model.release.set()
        await first
        after = await stub.Predict(request("after", "a great film"), timeout=30)
        items = [sentiment_pb2.StreamPredictRequest(id=str(i), review="fine") for i in range(5)]
        streamed = [r async for r in stub.StreamPredict(iter(items), timeout=30)]
        return {
            "outcomes": outcomes,
            "queued": queued,
            "after": after,
            "streamed": streamed,
            "stats": running.server.stats(),
        }


def test_hundreds_of_cancelled_calls_and_abandoned_streams_leave_the_queue_empty(
    start_server, serving_model
):
    model = GatedModel(serving_model)
    with start_server(model=model) as running:
        seen = asyncio.run(_cancel_everything_queued(running, model))
    assert all(isinstance(o, asyncio.CancelledError) for o in seen["outcomes"])
    after = [p.score for p in seen["after"].predictions]
    assert after == pytest.approx(serving_model.predict(["after", "a great film"]), abs=1e-5)
    assert [r.WhichOneof("result") for r in seen["streamed"]] == ["prediction"] * 5
    # None of the cancelled reviews reached the model, and every one left the queue.
    assert not [r for r in model.reviews_scored if r.startswith(("gone", "left"))]
    assert seen["stats"].dropped_cancelled == seen["queued"]
    assert seen["stats"].queue_depth == 0


async def _race_cancellations_against_the_model(running, rng: random.Random) -> dict:
    """Rounds of calls and streams, half of them cancelled at random moments while batches run."""
    answered, cancelled = 0, 0
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = stubs.SentimentServiceStub(channel)

        async def unary(i: int) -> str:
            reviews = [f"review {i} {k} great" for k in range(rng.randint(1, 4))]
            call = stub.Predict(request(*reviews), timeout=30)
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0, 0.03))
                call.cancel()
            try:
                response = await call
            except asyncio.CancelledError:
                return "cancelled"
            assert len(response.predictions) == len(reviews)
            return "answered"

        async def abandoned_stream(i: int) -> str:
            call = stub.StreamPredict(timeout=30)
            for k in range(20):
                await call.write(sentiment_pb2.StreamPredictRequest(id=str(k), review=f"s{i} {k}"))
            for _ in range(rng.randint(0, 5)):
                await call.read()
            call.cancel()
            return "cancelled"

        for _round in range(3):
            jobs = [unary(i) for i in range(150)] + [abandoned_stream(i) for i in range(10)]
            rng.shuffle(jobs)
            for outcome in await asyncio.gather(*jobs):
                answered += outcome == "answered"
                cancelled += outcome == "cancelled"
        await until(lambda: running.server.stats().queue_depth == 0)
        after = await stub.Predict(request("after the races"), timeout=10)
    return {"answered": answered, "cancelled": cancelled, "after": after}


def test_cancellations_racing_running_batches_never_wedge_the_batcher(start_server, serving_model):
    model = CountingModel(serving_model)
    with start_server(model=model, max_batch_size=8) as running:
        seen = asyncio.run(_race_cancellations_against_the_model(running, random.Random(50046)))
        stats = running.server.stats()
    assert seen["answered"] > 0 and seen["cancelled"] > 0
    expected = serving_model.predict(["after the races"])[0]
    assert seen["after"].predictions[0].score == pytest.approx(expected, abs=1e-5)
    assert stats.queue_depth == 0
    assert stats.dropped_cancelled > 0  # some cancellations did catch reviews in the queue
