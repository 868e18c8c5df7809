"""MicroBatcher with a fake model: when batches run, who they contain, and how errors travel."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.batching.batcher import MicroBatcher
from server.errors import DeadlineExceededError, InferenceError, QueueFullError, ShuttingDownError

# Long enough that a test relying on it by mistake would time out, not pass.
NEVER_MS = 30_000


class FakeModel:
    """Scores a review as its length; can hold every call until released, or fail."""

    def __init__(self, *, held: bool = False, error: Exception | None = None):
        self.calls: list[list[str]] = []
        self.call_times_s: list[float] = []
        self.error = error
        self.release = threading.Event()
        self.started = threading.Event()
        if not held:
            self.release.set()

    def __call__(self, reviews: list[str]) -> list[float | Exception]:
        self.calls.append(list(reviews))
        self.call_times_s.append(time.monotonic())
        self.started.set()
        assert self.release.wait(10), "test never released the fake model"
        if self.error is not None:
            raise self.error
        return [
            ValueError(f"{r} is bad") if r.startswith("bad") else float(len(r)) for r in reviews
        ]

    def hold(self) -> None:
        """Holds the next call, and forgets that an earlier one started."""
        self.release.clear()
        self.started.clear()

    async def wait_until_busy(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 5), "the model never started"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def make_batcher(model, **settings) -> MicroBatcher:
    defaults = {"max_batch_size": 8, "max_delay_ms": NEVER_MS, "queue_capacity": 100}
    return MicroBatcher(model, **{**defaults, **settings})


async def occupy(model: FakeModel, batcher: MicroBatcher) -> asyncio.Future:
    """Puts one review into the held model, so what follows queues behind a busy model."""
    (future,) = batcher.submit(["first"])
    await model.wait_until_busy()
    return future


def test_lone_review_on_idle_model_runs_at_once():
    async def scenario():
        batcher = make_batcher(FakeModel())
        started_s = time.monotonic()
        first = await batcher.predict("abc")
        # Idle again after the first batch: the next lone review must not wait either.
        second = await batcher.predict("abcd")
        elapsed_s = time.monotonic() - started_s
        await batcher.close()
        return first, second, elapsed_s

    first, second, elapsed_s = run(scenario())
    assert (first, second) == (3.0, 4.0)
    assert elapsed_s < 2, "a lone review waited for max_delay_ms"


def test_flush_on_size_without_waiting_for_the_delay():
    model = FakeModel(held=True)

    async def scenario():
        batcher = make_batcher(model, max_batch_size=4)
        await occupy(model, batcher)
        futures = [f for r in ["a", "bb", "ccc", "dddd"] for f in batcher.submit([r])]
        released_s = time.monotonic()
        model.release.set()
        results = await asyncio.gather(*futures)
        waited_s = time.monotonic() - released_s
        await batcher.close()
        return results, waited_s

    results, waited_s = run(scenario())
    assert results == [1.0, 2.0, 3.0, 4.0]
    assert model.calls == [["first"], ["a", "bb", "ccc", "dddd"]]
    assert waited_s < 2, "a full batch waited for max_delay_ms"


def test_flush_on_delay_after_the_oldest_arrived():
    model = FakeModel(held=True)
    max_delay_ms = 300

    async def scenario():
        batcher = make_batcher(model, max_batch_size=100, max_delay_ms=max_delay_ms)
        await occupy(model, batcher)
        queued_s = time.monotonic()
        futures = batcher.submit(["a"]) + batcher.submit(["bb"])
        model.release.set()
        results = await asyncio.gather(*futures)
        await batcher.close()
        return results, queued_s

    results, queued_s = run(scenario())
    assert results == [1.0, 2.0]
    assert model.calls == [["first"], ["a", "bb"]]
    # The model was free almost at once, yet the partial batch waited for company.
    assert model.call_times_s[1] - queued_s >= 0.9 * max_delay_ms / 1000
    assert model.call_times_s[1] - queued_s < 5


def test_batch_error_reaches_every_caller_and_the_batcher_recovers():
    model = FakeModel(held=True, error=RuntimeError("out of memory"))

    async def scenario():
        batcher = make_batcher(model, max_batch_size=3)
        first = await occupy(model, batcher)
        futures = [first] + [f for r in ["a", "b", "c"] for f in batcher.submit([r])]
        model.release.set()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        model.error = None
        after = await batcher.predict("after")
        await batcher.close()
        return outcomes, after

    outcomes, after = run(scenario())
    assert len(outcomes) == 4
    for outcome in outcomes:
        assert isinstance(outcome, InferenceError)
        assert "out of memory" in str(outcome)
        assert isinstance(outcome.__cause__, RuntimeError)
    assert after == 5.0


def test_per_review_error_fails_only_that_caller():
    async def scenario():
        batcher = make_batcher(FakeModel())
        futures = batcher.submit(["good", "bad one", "fine"])
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close()
        return outcomes

    good, bad, fine = run(scenario())
    assert (good, fine) == (4.0, 4.0)
    assert isinstance(bad, ValueError) and "bad one is bad" in str(bad)


def test_wrong_number_of_results_fails_the_batch_clearly():
    async def scenario():
        batcher = make_batcher(lambda reviews: [0.5])
        outcomes = await asyncio.gather(*batcher.submit(["a", "b"]), return_exceptions=True)
        await batcher.close()
        return outcomes

    for outcome in run(scenario()):
        assert isinstance(outcome, InferenceError)
        assert "1 results for 2 reviews" in str(outcome)


def test_cancelled_callers_are_dropped_before_inference():
    model = FakeModel(held=True)

    async def scenario():
        batcher = make_batcher(model, max_batch_size=3, max_delay_ms=50)
        await occupy(model, batcher)
        callers = {r: asyncio.create_task(batcher.predict(r)) for r in ["a", "gone", "ccc"]}
        await asyncio.sleep(0)  # let every caller queue its review
        callers["gone"].cancel()
        await asyncio.sleep(0)
        model.release.set()
        results = [await callers["a"], await callers["ccc"]]
        # Every caller of a whole queued batch leaving must not wedge the batcher (ray#50046).
        model.hold()
        await occupy(model, batcher)
        leavers = [asyncio.create_task(batcher.predict(r)) for r in ["x", "y", "z"]]
        await asyncio.sleep(0)
        for leaver in leavers:
            leaver.cancel()
        model.release.set()
        after = await batcher.predict("after")
        stats = batcher.stats()
        await batcher.close()
        return results, after, stats

    results, after, stats = run(scenario())
    assert results == [1.0, 3.0]
    assert ["a", "ccc"] in model.calls
    assert not any(r in call for call in model.calls for r in ["gone", "x", "y", "z"])
    assert after == 5.0
    assert stats.dropped_cancelled == 4


def test_full_queue_is_refused_whole_requests_only():
    model = FakeModel(held=True)

    async def scenario():
        batcher = make_batcher(model, queue_capacity=3)
        await occupy(model, batcher)
        admitted = batcher.submit(["a", "b"])
        with pytest.raises(QueueFullError) as two_more:
            batcher.submit(["c", "d"])  # one place left: all or nothing
        admitted += batcher.submit(["c"])
        with pytest.raises(QueueFullError) as one_more:
            batcher.submit(["e"])
        depth = batcher.stats().queue_depth
        model.release.set()
        results = await asyncio.gather(*admitted)
        await batcher.close()
        return two_more.value, one_more.value, depth, results

    two_more, one_more, depth, results = run(scenario())
    assert "3 of 3" in str(one_more) and one_more.retry_after_ms >= 1
    assert "this request has 2" in str(two_more)
    assert depth == 3
    assert results == [1.0, 1.0, 1.0]


def test_expired_reviews_are_dropped_before_inference():
    model = FakeModel(held=True)

    async def scenario():
        batcher = make_batcher(model, max_batch_size=2)
        await occupy(model, batcher)
        (late,) = batcher.submit(["late"], deadline_s=time.monotonic() + 0.05)
        (in_time,) = batcher.submit(["in time"], deadline_s=time.monotonic() + 30)
        await asyncio.sleep(0.1)
        model.release.set()
        outcomes = await asyncio.gather(late, in_time, return_exceptions=True)
        stats = batcher.stats()
        await batcher.close()
        return outcomes, stats

    (late, in_time), stats = run(scenario())
    assert isinstance(late, DeadlineExceededError)
    assert in_time == 7.0
    assert model.calls[1] == ["in time"]
    assert stats.dropped_expired == 1


def test_close_drains_queued_reviews_then_refuses_new_ones():
    model = FakeModel(held=True)

    async def scenario():
        batcher = make_batcher(model)
        first = await occupy(model, batcher)
        queued = batcher.submit(["ab"])
        closing = asyncio.create_task(batcher.close(drain_timeout_s=10))
        await asyncio.sleep(0)
        with pytest.raises(ShuttingDownError):
            batcher.submit(["too late"])
        model.release.set()
        await closing
        return await first, await queued[0]

    # Closing also skips the wait for company: this would otherwise take NEVER_MS.
    assert run(scenario()) == (5.0, 2.0)


def test_stats_count_batches_and_separate_queue_from_inference_time():
    model = FakeModel(held=True)

    async def scenario():
        batcher = make_batcher(model, max_batch_size=4)
        await occupy(model, batcher)
        futures = batcher.submit(["a", "b", "c", "d"])
        await asyncio.sleep(0.05)
        model.release.set()
        await asyncio.gather(*futures)
        stats = batcher.stats()
        await batcher.close()
        return stats

    stats = run(scenario())
    assert (stats.batches, stats.reviews, stats.mean_batch_size) == (2, 5, 2.5)
    assert stats.queue_depth == 0
    # The four queued reviews each waited >= 50 ms behind the held first batch.
    assert stats.queue_wait_s_total >= 4 * 0.05
    assert stats.inference_s_total >= 0.05
    assert "mean_batch_size=2.50" in stats.summary()


@pytest.mark.parametrize(
    ("setting", "value"),
    [("max_batch_size", 0), ("max_delay_ms", -1), ("queue_capacity", 0), ("max_batch_size", 2.5)],
)
def test_bad_settings_are_refused_by_name(setting, value):
    with pytest.raises(ValueError, match=f"{setting} must be .* got {value}"):
        make_batcher(FakeModel(), **{setting: value})


def test_a_result_that_is_not_a_score_fails_only_its_caller():
    async def scenario():
        batcher = make_batcher(lambda reviews: [0.25, None, "0.5"])
        outcomes = await asyncio.gather(*batcher.submit(["a", "b", "c"]), return_exceptions=True)
        await batcher.close()
        return outcomes

    first, second, third = run(scenario())
    assert (first, third) == (0.25, 0.5)
    assert isinstance(second, InferenceError) and "returned None instead of a score" in str(second)


def test_a_stop_iteration_from_the_model_fails_only_its_caller():
    # A future refuses to hold a StopIteration (set_exception raises TypeError): taken as it
    # is, it would stop the answering there and strand every later caller of the batch.
    async def scenario():
        batcher = make_batcher(lambda reviews: [0.25, StopIteration(), 0.75])
        outcomes = await asyncio.gather(*batcher.submit(["a", "b", "c"]), return_exceptions=True)
        await batcher.close()
        return outcomes

    first, second, third = run(scenario())
    assert (first, third) == (0.25, 0.75)
    assert isinstance(second, InferenceError) and "StopIteration" in str(second)
