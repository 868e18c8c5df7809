"""Overload: a full queue refuses new work at once with RESOURCE_EXHAUSTED and a retry hint,
never holds more than --queue-capacity reviews, and finishes the work it admitted; the client
library's retries (gRPC's own retry policy) ride the overload out within the caller's deadline.
A call that a slow model would leave queued past its deadline is refused the same way.

A GatedModel (the real model, held busy until the test releases it) makes the queue fill
deterministically, with no timing assumptions.
"""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from imdb_sentiment_client import OverloadedError, RetryPolicy, SentimentClient
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2_grpc as stubs
from tests.helpers import occupy, request, until
from tests.model_spies import GatedModel

CAPACITY = 8
SLOW_S = 1.0  # how long the model is held for the slow batch
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


async def _fill_then_flood(running, model: GatedModel) -> dict:
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = stubs.SentimentServiceStub(channel)
        first = await occupy(stub, model)
        admitted_reviews = [[f"admitted {i} {k} great" for k in range(4)] for i in range(2)]
        admitted = [
            asyncio.ensure_future(stub.Predict(request(*reviews), timeout=60))
            for reviews in admitted_reviews
        ]
        await until(lambda: running.server.stats().queue_depth == CAPACITY)

        deepest = 0

        async def watch_depth() -> None:
            nonlocal deepest
            while True:
                deepest = max(deepest, running.server.stats().queue_depth)
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch_depth())
        flood = [stub.Predict(request(f"flood {i}"), timeout=60) for i in range(200)]
        refused = await asyncio.gather(*flood, return_exceptions=True)
        stream_requests = [
            sentiment_pb2.StreamPredictRequest(id=str(i), review="flooding stream")
            for i in range(50)
        ]
        streamed = [r async for r in stub.StreamPredict(iter(stream_requests), timeout=60)]
        watcher.cancel()
        # Everything above was answered while the model was still held: refusals do not wait.
        busy_calls = len(model.calls)
        stats = running.server.stats()

        model.release.set()
        done = await asyncio.gather(first, *admitted)
        return {
            "refused": refused,
            "streamed": streamed,
            "busy_calls": busy_calls,
            "stats": stats,
            "deepest": deepest,
            "done": done,
            "admitted_reviews": admitted_reviews,
        }


def test_a_full_queue_refuses_at_once_holds_its_capacity_and_finishes_what_it_admitted(
    start_server, serving_model
):
    model = GatedModel(serving_model)
    settings = {"queue_capacity": CAPACITY, "max_batch_size": 4, "max_reviews_per_request": 4}
    with start_server(model=model, **settings) as running:
        seen = asyncio.run(_fill_then_flood(running, model))

    assert seen["busy_calls"] == 1, "the model ran while refusals were being answered"
    for error in seen["refused"]:
        assert isinstance(error, grpc.RpcError) and error.code() == RESOURCE_EXHAUSTED, error
        assert "the queue is full (8 of 8 reviews waiting" in error.details()
        assert "retry after about" in error.details()
        assert int(dict(error.trailing_metadata())["grpc-retry-pushback-ms"]) >= 1
    assert [r.id for r in seen["streamed"]] == [str(i) for i in range(50)]
    for response in seen["streamed"]:
        assert response.error.code == RESOURCE_EXHAUSTED.value[0]
        assert "retry after about" in response.error.message
    # Memory stays bounded: the queue never held more than its capacity, however many came.
    assert seen["deepest"] <= CAPACITY
    assert (seen["stats"].queue_depth, seen["stats"].rejected_full) == (CAPACITY, 250)
    # The admitted work completes, with the real model's scores.
    first, *admitted = seen["done"]
    assert first.predictions[0].score == pytest.approx(serving_model.predict(["in the model"])[0])
    for reviews, response in zip(seen["admitted_reviews"], admitted, strict=True):
        assert [p.score for p in response.predictions] == pytest.approx(
            serving_model.predict(reviews), abs=1e-5
        )
    assert sorted(model.reviews_scored) == sorted(
        ["in the model", *seen["admitted_reviews"][0], *seen["admitted_reviews"][1]]
    )


def test_the_client_retries_a_full_queue_until_admitted_within_its_deadline(
    start_server, serving_model
):
    model = GatedModel(serving_model)
    # A long max_delay_ms makes the server's retry hint long, so the releaser below
    # (which waits for the first refusal of the retrying call) always acts before the retry.
    settings = {"queue_capacity": 2, "max_batch_size": 2, "max_reviews_per_request": 2}
    with start_server(model=model, max_delay_ms=300, **settings) as running:
        with grpc.insecure_channel(running.target) as channel:
            stub = stubs.SentimentServiceStub(channel)
            first = stub.Predict.future(request("in the model"), timeout=60)
            while not model.calls:
                time.sleep(0.005)
            queued = stub.Predict.future(request("queued one", "queued two"), timeout=60)
            while running.server.stats().queue_depth < 2:
                time.sleep(0.005)
            with SentimentClient(running.target, retry=None) as impatient:
                with pytest.raises(OverloadedError):
                    impatient.predict(["no retries"])

            def release_after_the_next_refusal() -> None:
                while running.server.stats().rejected_full < 2:
                    time.sleep(0.002)
                model.release.set()

            releaser = threading.Thread(target=release_after_the_next_refusal, daemon=True)
            releaser.start()
            retrying = RetryPolicy(max_attempts=5, initial_backoff_s=0.2, max_backoff_s=1.0)
            with SentimentClient(running.target, retry=retrying, timeout_s=30) as patient:
                (prediction,) = patient.predict(["retried until admitted"])
            releaser.join(10)
            first.result()
            queued.result()
            rejected = running.server.stats().rejected_full
    assert rejected >= 2  # the retrying call was refused at least once, then admitted
    expected = serving_model.predict(["retried until admitted"])[0]
    assert prediction.score == pytest.approx(expected, abs=1e-5)
    assert "retried until admitted" in model.reviews_scored
    assert "no retries" not in model.reviews_scored


async def _refuse_calls_a_slow_model_would_make_late(running, model: GatedModel) -> dict:
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = stubs.SentimentServiceStub(channel)
        first = await occupy(stub, model)
        await asyncio.sleep(SLOW_S)  # one slow batch: the estimate is at least SLOW_S now
        model.release.set()
        await first
        model.release.clear()
        held = asyncio.ensure_future(stub.Predict(request("held"), timeout=60))
        await until(lambda: len(model.calls) == 2)
        late = [stub.Predict(request(f"late {i}"), timeout=SLOW_S / 2) for i in range(20)]
        refused = await asyncio.gather(*late, return_exceptions=True)
        patient = asyncio.ensure_future(stub.Predict(request("patient"), timeout=60))
        await until(lambda: running.server.stats().queue_depth == 1)
        stats = running.server.stats()
        model.release.set()
        await asyncio.gather(held, patient)
        return {"refused": refused, "stats": stats}


def test_calls_a_slow_model_would_make_late_are_refused_at_once_with_a_retry_hint(
    start_server, serving_model
):
    model = GatedModel(serving_model)
    with start_server(model=model) as running:
        seen = asyncio.run(_refuse_calls_a_slow_model_would_make_late(running, model))
    for error in seen["refused"]:
        # Not DEADLINE_EXCEEDED: refused when they arrived, not queued until they expired.
        assert isinstance(error, grpc.RpcError) and error.code() == RESOURCE_EXHAUSTED, error
        assert "would outlast this request's deadline" in error.details()
        assert int(dict(error.trailing_metadata())["grpc-retry-pushback-ms"]) >= 1
    assert (seen["stats"].rejected_late, seen["stats"].rejected_full) == (20, 0)
    assert not any(review.startswith("late") for review in model.reviews_scored)
    assert "patient" in model.reviews_scored
