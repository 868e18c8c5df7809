"""MicroBatcher regrouping: callers of a batch who call again at once are gathered into one batch.

The model here takes a fixed time per batch, so the regroup window (half of it)
is long against the few milliseconds the callers take to come back.
"""

from __future__ import annotations

import asyncio
import threading
import time

from server.batching.batcher import MicroBatcher

BATCH_S = 0.2  # the fake model's time per batch; the regroup window is half of it
LATE_S = 0.03  # how long after another a late caller arrives: well inside the window


class TimedModel:
    """Scores a review as its length after BATCH_S; records each batch."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def __call__(self, reviews: list[str]) -> list[float]:
        with self._lock:
            self.calls.append(list(reviews))
        time.sleep(BATCH_S)
        return [float(len(r)) for r in reviews]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def make_batcher(model, **settings) -> MicroBatcher:
    defaults = {"max_batch_size": 8, "max_delay_ms": 1, "queue_capacity": 100}
    return MicroBatcher(model, **{**defaults, **settings})


def test_callers_in_a_loop_stay_one_batch_even_when_they_come_back_apart():
    model = TimedModel()

    async def caller(batcher: MicroBatcher, index: int) -> None:
        for _ in range(3):
            await batcher.predict(f"c{index}")
            await asyncio.sleep(0.005 * index)  # they come back a few ms apart, as over a network

    async def scenario():
        batcher = make_batcher(model)
        await asyncio.gather(*(caller(batcher, i) for i in range(4)))
        await batcher.close()

    run(scenario())
    # Without regrouping the first caller back would run alone and the four would split
    # into groups taking turns: [4], [1], [3], [1], [3] ...
    assert [len(call) for call in model.calls] == [4, 4, 4]


def test_a_review_right_after_a_batch_waits_for_the_next_one():
    model = TimedModel()

    async def scenario():
        batcher = make_batcher(model)
        await asyncio.gather(*batcher.submit(["ab", "cd"]))
        first = asyncio.ensure_future(batcher.predict("x"))
        await asyncio.sleep(LATE_S)
        second = await batcher.predict("yy")
        await batcher.close()
        return await first, second

    assert run(scenario()) == (1.0, 2.0)
    assert model.calls == [["ab", "cd"], ["x", "yy"]]


def test_after_a_regroup_that_came_to_nothing_the_next_is_skipped():
    model = TimedModel()

    async def scenario():
        batcher = make_batcher(model)
        await asyncio.gather(*batcher.submit(["ab", "cd"]))
        await batcher.predict("x")  # nobody else comes: it runs alone after the window
        await asyncio.gather(*batcher.submit(["ef", "gh"]))
        first = asyncio.ensure_future(batcher.predict("y"))
        await asyncio.sleep(LATE_S)
        await batcher.predict("zz")
        await first
        stats = batcher.stats()
        await batcher.close()
        return stats

    stats = run(scenario())
    # "y" did not wait for "zz" this time: it ran at once, and "zz" queued behind it.
    assert model.calls == [["ab", "cd"], ["x"], ["ef", "gh"], ["y"], ["zz"]]
    assert stats.batches == 5


def test_a_lone_caller_never_waits_for_company():
    model = TimedModel()

    async def scenario():
        batcher = make_batcher(model, max_delay_ms=30_000)
        started_s = time.monotonic()
        for review in ("a", "bb", "ccc"):
            await batcher.predict(review)
        elapsed_s = time.monotonic() - started_s
        await batcher.close()
        return elapsed_s

    elapsed_s = run(scenario())
    assert model.calls == [["a"], ["bb"], ["ccc"]]
    assert elapsed_s < 3 * BATCH_S + 1, "a lone review waited for company"
