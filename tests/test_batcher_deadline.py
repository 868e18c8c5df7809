"""MicroBatcher's deadline-aware admission: a request that the work ahead of it would make late
is refused at submit, not queued to expire; an idle model and a model that sped up again admit.

The fake model is slow because the test holds it: no assertion depends on how fast this
machine runs, only on the model having been held at least SLOW_S.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from server.batching.batcher import MicroBatcher
from server.errors import DeadlineExceededError, QueueFullError
from tests.test_batcher import NEVER_MS, FakeModel, make_batcher, occupy, run

SLOW_S = 1.0  # a held batch takes at least this long, so the estimate afterwards does too


async def slow_batch(model: FakeModel, batcher: MicroBatcher) -> None:
    """Runs one batch that the model holds for SLOW_S, then leaves the model fast again."""
    model.hold()
    first = await occupy(model, batcher)
    await asyncio.sleep(SLOW_S)
    model.release.set()
    await first


def in_s(seconds: float) -> float:
    """A deadline `seconds` from now."""
    return time.monotonic() + seconds


def test_a_request_the_work_ahead_would_make_late_is_refused_at_submit_whole():
    model = FakeModel()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=2)
        await slow_batch(model, batcher)
        model.hold()
        running = await occupy(model, batcher)
        queued = batcher.submit(["queued"])  # no deadline: never refused for one
        with pytest.raises(QueueFullError) as refused:
            batcher.submit(["too late", "too late too"], deadline_s=in_s(SLOW_S / 2))
        depth = batcher.stats().queue_depth
        in_time = batcher.submit(["in time"], deadline_s=in_s(NEVER_MS / 1000))
        model.release.set()
        results = await asyncio.gather(running, *queued, *in_time)
        stats = batcher.stats()
        await batcher.close()
        return refused.value, depth, results, stats

    refused, depth, results, stats = run(scenario())
    assert "would outlast this request's deadline" in str(refused)
    assert "1 queued ahead" in str(refused)
    assert refused.retry_after_ms >= 1
    assert depth == 1, "the refused reviews entered the queue"
    assert results == [5.0, 6.0, 7.0]
    assert not any(review.startswith("too late") for call in model.calls for review in call)
    assert (stats.rejected_late, stats.rejected_full) == (2, 0)
    assert "rejected_late=2" in stats.summary()


def test_nothing_is_refused_for_its_deadline_before_a_batch_has_run():
    model = FakeModel(held=True)

    async def scenario():
        batcher = make_batcher(model, max_batch_size=1)
        await occupy(model, batcher)
        (late,) = batcher.submit(["late"], deadline_s=in_s(0.01))  # no estimate: admitted
        await asyncio.sleep(0.05)
        model.release.set()
        outcome = await asyncio.gather(late, return_exceptions=True)
        stats = batcher.stats()
        await batcher.close()
        return outcome[0], stats

    outcome, stats = run(scenario())
    assert isinstance(outcome, DeadlineExceededError)
    assert (stats.rejected_late, stats.dropped_expired) == (0, 1)


def test_a_lone_review_on_an_idle_model_runs_whatever_the_estimate_says():
    model = FakeModel()

    async def scenario():
        batcher = make_batcher(model)
        await slow_batch(model, batcher)
        estimate_s = batcher.stats().estimated_review_s
        # The model is fast again, but only a batch can show it.
        (alone,) = batcher.submit(["alone"], deadline_s=in_s(SLOW_S / 2))
        result = await alone
        stats = batcher.stats()
        await batcher.close()
        return estimate_s, result, stats

    estimate_s, result, stats = run(scenario())
    assert estimate_s >= SLOW_S  # the estimate alone would have refused it
    assert result == 5.0
    assert stats.rejected_late == 0


def test_fast_batches_after_a_slow_one_bring_the_estimate_down_within_a_few_batches():
    model = FakeModel()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=2)
        await slow_batch(model, batcher)
        for i in range(8):
            await batcher.predict(f"fast {i}")
        recovered_s = batcher.stats().estimated_review_s
        # What the test above refused is admitted now.
        model.hold()
        running = await occupy(model, batcher)
        queued = batcher.submit(["queued"])
        in_time = batcher.submit(["in time"], deadline_s=in_s(SLOW_S / 2))
        model.release.set()
        results = await asyncio.gather(running, *queued, *in_time)
        await batcher.close()
        return recovered_s, results

    recovered_s, results = run(scenario())
    assert recovered_s < SLOW_S / 5
    assert results == [5.0, 6.0, 7.0]


def test_one_batch_held_long_among_fast_ones_is_taken_for_a_stall_and_refuses_nothing():
    model = FakeModel()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=1)
        for i in range(4):
            await batcher.predict(f"fast {i}")
        model.hold()
        running = await occupy(model, batcher)
        await asyncio.sleep(SLOW_S)  # a busy machine held this one batch
        admitted = batcher.submit(["admitted"], deadline_s=in_s(SLOW_S / 2))
        model.release.set()
        await asyncio.gather(running, *admitted, return_exceptions=True)
        stats = batcher.stats()
        await batcher.close()
        return stats

    assert run(scenario()).rejected_late == 0


def test_after_two_slow_batches_the_one_in_the_model_counts_before_it_ends():
    model = FakeModel()
    hold_s = SLOW_S / 2

    async def scenario():
        batcher = make_batcher(model, max_batch_size=1)
        for i in range(3):
            await batcher.predict(f"fast {i}")
        for _ in range(2):  # the model has slowed down
            model.hold()
            slow = await occupy(model, batcher)
            await asyncio.sleep(hold_s)
            model.release.set()
            await slow
        estimate_s = batcher.stats().estimated_review_s
        model.hold()
        running = await occupy(model, batcher)
        await asyncio.sleep(hold_s)  # the third slow batch, not ended yet
        with pytest.raises(QueueFullError):
            batcher.submit(["too late"], deadline_s=in_s(hold_s / 2))
        model.release.set()
        await running
        stats = batcher.stats()
        await batcher.close()
        return estimate_s, stats

    estimate_s, stats = run(scenario())
    assert estimate_s < hold_s / 2  # by the ended batches alone, two of four slow: still fast
    assert stats.rejected_late == 1


def test_with_deadline_admission_off_such_a_request_queues_and_expires():
    model = FakeModel()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=1, deadline_admission=False)
        await slow_batch(model, batcher)
        model.hold()
        running = await occupy(model, batcher)
        (late,) = batcher.submit(["too late"], deadline_s=in_s(SLOW_S / 2))
        await asyncio.sleep(SLOW_S)
        model.release.set()
        outcomes = await asyncio.gather(running, late, return_exceptions=True)
        stats = batcher.stats()
        await batcher.close()
        return outcomes, stats

    (result, late), stats = run(scenario())
    assert result == 5.0 and isinstance(late, DeadlineExceededError)
    assert (stats.rejected_late, stats.dropped_expired) == (0, 1)
