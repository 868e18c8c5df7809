"""The socket between a front and the model process: a real MicroBatcher behind an
EngineListener, a front's EngineClient before it, a fake model that records what it scores."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.batching.batcher import MicroBatcher
from server.errors import DeadlineExceededError, InvalidReviewError, QueueFullError
from server.processes import wire
from server.processes.engine import EngineListener
from server.processes.engine_client import EngineClient, ModelUnavailableError


class RecordingModel:
    """Scores a review as its length; holds every batch until released."""

    name, version, maxlen, vocabulary_size = "fake", 7, 10, 100
    decision_threshold, metrics, preset = 0.5, {}, "tiny"

    def __init__(self):
        self.scored: list[str] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def predict(self, reviews: list[str]):
        self.started.set()
        assert self.release.wait(10), "the test never released the model"
        self.scored += reviews
        return [InvalidReviewError("has no words") if r == "" else float(len(r)) for r in reviews]


async def pair(tmp_path, model, **batcher_settings):
    settings = {"max_batch_size": 8, "max_delay_ms": 0, "queue_capacity": 64}
    batcher = MicroBatcher(model.predict, **{**settings, **batcher_settings})
    listener = EngineListener(batcher, model)
    path = str(tmp_path / "model.sock")
    await listener.start(path)
    client = EngineClient(path)
    await client.start()
    assert await client.wait_connected(5)
    return batcher, listener, client


async def close(batcher, listener, client):
    await client.close()
    await listener.stop()
    await batcher.close(drain_timeout_s=0)


def test_scores_errors_and_the_model_s_description_cross_the_socket(tmp_path):
    async def main():
        model = RecordingModel()
        model.release.set()
        batcher, listener, client = await pair(tmp_path, model)
        outcomes = await asyncio.gather(
            *client.submit(["abc", "", "hello"]), return_exceptions=True
        )
        await close(batcher, listener, client)
        return outcomes, client

    (first, empty, last), client = asyncio.run(main())
    assert (first, last) == (3.0, 5.0)
    assert isinstance(empty, InvalidReviewError) and empty.reason == "has no words"


def test_a_cancelled_call_s_reviews_are_never_scored(tmp_path):
    async def main():
        model = RecordingModel()
        batcher, listener, client = await pair(tmp_path, model)
        (busy,) = client.submit(["occupies the model"])
        await asyncio.to_thread(model.started.wait, 5)
        cancelled = client.submit(["never scored", "nor this"])
        await asyncio.sleep(0.05)  # the reviews are queued in the model process
        for future in cancelled:
            future.cancel()
        await asyncio.sleep(0.05)  # the cancel reaches the model process
        model.release.set()
        await busy
        (after,) = client.submit(["scored after"])
        await after
        stats = batcher.stats()
        await close(batcher, listener, client)
        return model.scored, stats

    scored, stats = asyncio.run(main())
    assert scored == ["occupies the model", "scored after"]
    assert stats.dropped_cancelled == 2


def test_deadlines_and_refusals_reach_the_batcher(tmp_path):
    async def main():
        model = RecordingModel()
        batcher, listener, client = await pair(
            tmp_path, model, queue_capacity=2, deadline_admission=False
        )
        (busy,) = client.submit(["a"])
        await asyncio.to_thread(model.started.wait, 5)
        (late,) = client.submit(["b"], deadline_s=time.monotonic() + 0.05)
        refused = client.submit(["c", "d", "e"])
        errors = await asyncio.gather(*refused, return_exceptions=True)
        await asyncio.sleep(0.2)
        model.release.set()
        outcome = await asyncio.gather(late, return_exceptions=True)
        await busy
        await close(batcher, listener, client)
        return errors, outcome[0]

    errors, late = asyncio.run(main())
    assert all(isinstance(e, QueueFullError) and e.retry_after_ms > 0 for e in errors)
    assert isinstance(late, DeadlineExceededError)


def test_calls_in_flight_fail_at_once_when_the_model_process_goes(tmp_path):
    async def main():
        model = RecordingModel()
        batcher, listener, client = await pair(tmp_path, model)
        (pending,) = client.submit(["waits"])
        await asyncio.to_thread(model.started.wait, 5)
        await listener.stop()  # as the model process's death closes its sockets
        error = await asyncio.wait_for(asyncio.gather(pending, return_exceptions=True), 2)
        with pytest.raises(ModelUnavailableError):
            client.submit(["refused while it is away"])
        with pytest.raises(ModelUnavailableError):
            client.version  # noqa: B018  (no model is described while it is away)
        model.release.set()
        await client.close()
        await batcher.close(drain_timeout_s=0)
        return error[0]

    assert isinstance(asyncio.run(main()), ModelUnavailableError)


def test_frames_round_trip_and_a_bad_frame_ends_the_connection():
    async def main():
        reader = asyncio.StreamReader()
        message = ("predict", 3, ["a review", "another"], 12.5, "req-1")
        reader.feed_data(wire.encode(message) + b"\x05\x00\x00\x00oops!")
        reader.feed_eof()
        first = await wire.read(reader)
        with pytest.raises(wire.ConnectionLost):
            await wire.read(reader)
        return first

    assert asyncio.run(main()) == ("predict", 3, ["a review", "another"], 12.5, "req-1")
    error = wire.decode_error(wire.encode_error(QueueFullError("full", retry_after_ms=40)))
    assert isinstance(error, QueueFullError) and error.retry_after_ms == 40
