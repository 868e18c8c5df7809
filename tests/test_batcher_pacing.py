"""MicroBatcher's paced answers: while admission is refusing, a batch's answers go out one at a
time, earliest deadline first, so a refusal arriving meanwhile is not queued behind all of them;
otherwise at once. None is lost when the batcher closes mid-way.

Fake model: the pacing is the batcher's, and the model is held only to give the batch a known
minimum duration (the cap on the pace is a share of it).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from server import batcher as batcher_module
from server.batcher import MicroBatcher, answer_gap_s
from server.errors import QueueFullError
from tests.test_batcher import FakeModel, make_batcher, occupy, run

BATCH = 8
HELD_S = 0.2  # the paced batch takes at least this long: its gap is the full _PACE_GAP_S


class SlowBatches(FakeModel):
    """FakeModel whose batches of several take at least HELD_S."""

    def __call__(self, reviews: list[str]) -> list[float | Exception]:
        if len(reviews) > 1:
            time.sleep(HELD_S)
        return super().__call__(reviews)


class Answers:
    """When each future was answered, in order, and whether the others were done by then."""

    def __init__(self, futures: list[asyncio.Future], names: list[str]):
        self.order: list[str] = []
        self.times_s: list[float] = []
        self.others_done_at_first: bool | None = None
        for future, name in zip(futures, names, strict=True):
            future.add_done_callback(lambda f, name=name: self._done(futures, name))

    def _done(self, futures: list[asyncio.Future], name: str) -> None:
        if self.others_done_at_first is None:
            self.others_done_at_first = all(f.done() for f in futures)
        self.order.append(name)
        self.times_s.append(time.monotonic())


async def held_batch(model: SlowBatches, batcher: MicroBatcher, refuse: bool) -> Answers:
    """Queues a batch of BATCH behind a held model, latest deadline first, refusing one more
    request if `refuse`, and lets it run. Returns its answers' record."""
    model.hold()
    first = await occupy(model, batcher)
    names = [f"review {i}" for i in range(BATCH)]
    now_s = time.monotonic()
    futures = [
        future
        for i, name in enumerate(names)
        for future in batcher.submit([name], deadline_s=now_s + 60 - i)
    ]
    answers = Answers(futures, names)
    if refuse:
        with pytest.raises(QueueFullError):
            batcher.submit(["one too many"])
    model.release.set()
    await first
    assert await asyncio.gather(*futures) == [float(len(name)) for name in names]
    return answers


def test_while_refusing_a_batch_is_answered_one_at_a_time_earliest_deadline_first():
    model = SlowBatches()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=BATCH, queue_capacity=BATCH)
        answers = await held_batch(model, batcher, refuse=True)
        await batcher.close()
        return answers

    answers = run(scenario())
    assert answers.order == [f"review {i}" for i in reversed(range(BATCH))]
    assert answers.others_done_at_first is False
    spread_s = answers.times_s[-1] - answers.times_s[0]
    assert spread_s >= 0.9 * (BATCH - 1) * batcher_module._PACE_GAP_S, answers.times_s


def test_without_a_refusal_a_batch_is_answered_at_once():
    model = SlowBatches()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=BATCH, queue_capacity=BATCH + 1)
        answers = await held_batch(model, batcher, refuse=False)
        await batcher.close()
        return answers

    answers = run(scenario())
    assert answers.others_done_at_first is True
    assert answers.order == [f"review {i}" for i in range(BATCH)]


def test_pacing_ends_a_while_after_the_last_refusal(monkeypatch):
    monkeypatch.setattr(batcher_module, "_PACE_AFTER_REFUSAL_S", 2 * HELD_S)
    model = SlowBatches()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=BATCH, queue_capacity=BATCH)
        paced = await held_batch(model, batcher, refuse=True)
        await asyncio.sleep(2 * HELD_S)
        unpaced = await held_batch(model, batcher, refuse=False)
        await batcher.close()
        return paced, unpaced

    paced, unpaced = run(scenario())
    assert (paced.others_done_at_first, unpaced.others_done_at_first) == (False, True)


def test_closing_mid_way_answers_the_rest_at_once(monkeypatch):
    monkeypatch.setattr(batcher_module, "_PACE_GAP_S", 10.0)  # the rest would take minutes
    model = SlowBatches()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=BATCH, queue_capacity=BATCH)
        model.hold()
        first = await occupy(model, batcher)
        futures = [f for i in range(BATCH) for f in batcher.submit([f"r{i}"])]
        with pytest.raises(QueueFullError):
            batcher.submit(["one too many"])
        model.release.set()
        await first
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        answered_before_close = sum(f.done() for f in futures)
        await batcher.close()
        return answered_before_close, [f.result() for f in futures]

    answered_before_close, results = run(scenario())
    assert answered_before_close == 1
    assert results == [2.0] * BATCH


def test_the_gap_keeps_answering_within_half_the_batch_time():
    assert answer_gap_s(8, 1.3) == batcher_module._PACE_GAP_S
    assert answer_gap_s(129, 0.064) == pytest.approx(0.5 * 0.064 / 128)
    assert 128 * answer_gap_s(129, 0.064) <= 0.5 * 0.064 + 1e-12
    assert answer_gap_s(1, 0.0) == 0.0
