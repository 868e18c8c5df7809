"""Deadlines: work whose caller's deadline has passed is never computed, the caller gets
DEADLINE_EXCEEDED, and requests with no deadline get the server's --default-timeout-ms.

A GatedModel holds the real model busy so that work waits in the queue past its deadline;
the model's own record of what reached it is the proof that expired work was never computed.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2_grpc as stubs
from tests.helpers import occupy, request, until
from tests.model_spies import GatedModel

DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


async def _expire_behind_a_busy_model(running, model: GatedModel, timeout_s=None) -> dict:
    """Holds the model, sends unary calls and a stream that expire in the queue, then releases."""
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = stubs.SentimentServiceStub(channel)
        first = await occupy(stub, model)
        late = [
            stub.Predict(request(f"late {i}", f"late {i} too"), timeout=timeout_s)
            for i in range(40)
        ]
        unary = await asyncio.gather(*late, return_exceptions=True)
        stream_items = [
            sentiment_pb2.StreamPredictRequest(id=str(i), review=f"late stream {i}")
            for i in range(10)
        ]
        stream = stub.StreamPredict(iter(stream_items), timeout=timeout_s)
        try:
            streamed = [response async for response in stream]
        except grpc.RpcError as error:
            streamed = error
        # The caller's deadline and the server's clean-up race; expired work must leave soon.
        await until(lambda: running.server.stats().queue_depth == 0)
        model.release.set()
        # A review already in the model is not stopped; its caller may still time out.
        await asyncio.gather(first, return_exceptions=True)
        after = await stub.Predict(request("after"), timeout=60)
        return {"unary": unary, "streamed": streamed, "after": after}


def test_expired_work_is_never_computed_and_callers_get_deadline_exceeded(
    start_server, serving_model
):
    model = GatedModel(serving_model)
    with start_server(model=model) as running:
        seen = asyncio.run(_expire_behind_a_busy_model(running, model, timeout_s=0.3))
    for error in seen["unary"]:
        assert isinstance(error, grpc.RpcError) and error.code() == DEADLINE_EXCEEDED, error
    assert isinstance(seen["streamed"], grpc.RpcError)
    assert seen["streamed"].code() == DEADLINE_EXCEEDED
    assert seen["after"].predictions[0].score == pytest.approx(
        serving_model.predict(["after"])[0], abs=1e-5
    )
    assert model.reviews_scored == ["in the model", "after"]


def test_requests_without_a_deadline_get_the_servers_default_timeout(start_server, serving_model):
    model = GatedModel(serving_model)
    with start_server(model=model, default_timeout_ms=300) as running:
        seen = asyncio.run(_expire_behind_a_busy_model(running, model, timeout_s=None))
        with grpc.insecure_channel(running.target) as channel:
            idle = stubs.SentimentServiceStub(channel).Predict(request("no deadline, idle"))
    for error in seen["unary"]:
        assert isinstance(error, grpc.RpcError) and error.code() == DEADLINE_EXCEEDED, error
        # The server's words, with its default: the caller set no deadline of its own.
        assert error.details() == "no result within the deadline (300 ms)"
    # A stream without a deadline goes on; each review that waited too long fails alone.
    assert [r.id for r in seen["streamed"]] == [str(i) for i in range(10)]
    for response in seen["streamed"]:
        assert response.error.code == DEADLINE_EXCEEDED.value[0]
    assert model.reviews_scored == ["in the model", "after", "no deadline, idle"]
    assert idle.predictions[0].model_version == 1  # the default does not hurt normal calls


def test_a_callers_longer_deadline_is_capped_by_the_servers_default(start_server, serving_model):
    model = GatedModel(serving_model)
    with start_server(model=model, default_timeout_ms=300) as running:
        seen = asyncio.run(_expire_behind_a_busy_model(running, model, timeout_s=30))
    for error in seen["unary"]:
        assert error.code() == DEADLINE_EXCEEDED
        assert error.details() == "no result within the deadline (300 ms)"
    assert model.reviews_scored == ["in the model", "after"]
