"""MicroBatcher's paced answers: while admission is refusing, a batch's answers go out a request
at a time, earliest deadline first, so a refusal arriving meanwhile is not queued behind all of
them; otherwise at once. None is lost when the batcher closes mid-way.

Fake model: the pacing is the batcher's, and batches of several are made to take HELD_S only to
give them a known minimum duration (the cap on the pace is a share of it).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from server.batching import batcher as batcher_module
from server.batching.batcher import MicroBatcher, answer_gap_s
from server.errors import QueueFullError
from tests.test_batcher import FakeModel, make_batcher, occupy, run
from tests.test_batcher_deadline import slow_batch

REQUESTS = batcher_module._PACE_MIN_REQUESTS + 4
HELD_S = 0.2  # a batch of several takes at least this long: its gap is the full _PACE_GAP_S


class SlowBatches(FakeModel):
    """FakeModel whose batches of several take at least HELD_S."""

    def __call__(self, reviews: list[str]) -> list[float | Exception]:
        if len(reviews) > 1:
            time.sleep(HELD_S)
        return super().__call__(reviews)


class Answers:
    """When each request was answered, in order, and which futures were done by then."""

    def __init__(self, requests: dict[str, list[asyncio.Future]]):
        self.order: list[str] = []
        self.times_s: list[float] = []
        self.done_at_first: set[str] | None = None
        self.apart: set[str] = set()  # requests whose reviews were answered in separate turns
        for name, futures in requests.items():
            futures[0].add_done_callback(lambda _, fs=futures, name=name: self._check(fs, name))
            futures[-1].add_done_callback(lambda _, name=name: self._done(requests, name))

    def _check(self, futures: list[asyncio.Future], name: str) -> None:
        if not all(f.done() for f in futures):
            self.apart.add(name)

    def _done(self, requests: dict[str, list[asyncio.Future]], name: str) -> None:
        if self.done_at_first is None:
            self.done_at_first = {n for n, fs in requests.items() if all(f.done() for f in fs)}
        self.order.append(name)
        self.times_s.append(time.monotonic())


async def batch_behind_held_model(
    model: FakeModel, batcher: MicroBatcher, deadlines_s: list[float | None], refuse: bool
) -> dict[str, list[asyncio.Future]]:
    """Holds the model on one review, then queues one request per deadline (two reviews each),
    then, if `refuse`, one request too many; returns the queued requests' futures by name and
    releases the model."""
    model.hold()
    first = await occupy(model, batcher)
    requests = {
        f"request {i}": batcher.submit([f"review {i}a", f"review {i}b"], deadline_s=deadline_s)
        for i, deadline_s in enumerate(deadlines_s)
    }
    if refuse:
        with pytest.raises(QueueFullError):
            batcher.submit(["one too many"])
    model.release.set()
    await first
    return requests


def latest_first(count: int, horizon_s: float = 60) -> list[float]:
    """`count` deadlines about `horizon_s` away, the latest first."""
    now_s = time.monotonic()
    return [now_s + horizon_s - i for i in range(count)]


def full_batcher(model: FakeModel) -> MicroBatcher:
    """Room for exactly REQUESTS requests of two reviews, all in one batch."""
    return make_batcher(model, max_batch_size=2 * REQUESTS, queue_capacity=2 * REQUESTS)


async def one_batch(
    model: FakeModel, deadlines_s: list[float | None], refuse: bool, **settings
) -> Answers:
    """batch_behind_held_model on a batcher made with `settings` (else full_batcher), then
    the record of its answers once all are in."""
    batcher = make_batcher(model, **settings) if settings else full_batcher(model)
    answers = await answered(await batch_behind_held_model(model, batcher, deadlines_s, refuse))
    await batcher.close()
    return answers


async def answered(requests: dict[str, list[asyncio.Future]]) -> Answers:
    answers = Answers(requests)
    for futures in requests.values():
        await asyncio.gather(*futures)
    return answers


def test_while_refusing_a_batch_is_answered_a_request_at_a_time_earliest_deadline_first():
    model = SlowBatches()
    answers = run(one_batch(model, latest_first(REQUESTS), refuse=True))
    assert answers.order == [f"request {i}" for i in reversed(range(REQUESTS))]
    assert not answers.apart, "a request's reviews were answered apart"
    # The first request's two reviews together, and no other request yet.
    assert answers.done_at_first == {f"request {REQUESTS - 1}"}
    spread_s = answers.times_s[-1] - answers.times_s[0]
    assert spread_s >= 0.9 * (REQUESTS - 1) * batcher_module._PACE_GAP_S, answers.times_s


def test_without_a_refusal_a_batch_is_answered_at_once():
    model = SlowBatches()
    room = {"max_batch_size": 2 * REQUESTS, "queue_capacity": 2 * REQUESTS + 1}
    answers = run(one_batch(model, latest_first(REQUESTS), refuse=False, **room))
    assert answers.done_at_first == {f"request {i}" for i in range(REQUESTS)}


def test_a_refusal_for_lateness_turns_pacing_on_too():
    model = FakeModel()

    async def scenario():
        batcher = make_batcher(model, max_batch_size=2 * REQUESTS, queue_capacity=1000)
        await slow_batch(model, batcher)  # the estimate now expects a batch to take ~1 s
        model.hold()
        first = await occupy(model, batcher)
        requests = {
            f"request {i}": batcher.submit([f"r{i}a", f"r{i}b"], deadline_s=deadline_s)
            for i, deadline_s in enumerate(latest_first(REQUESTS))
        }
        with pytest.raises(QueueFullError, match="would outlast this request's deadline"):
            batcher.submit(["late"], deadline_s=time.monotonic() + 0.01)
        model.release.set()
        await first
        answers = await answered(requests)
        await batcher.close()
        return answers

    answers = run(scenario())
    assert answers.done_at_first == {f"request {REQUESTS - 1}"}


def test_a_batch_of_few_requests_is_answered_at_once_even_while_refusing():
    model = SlowBatches()
    few = batcher_module._PACE_MIN_REQUESTS - 1

    room = {"max_batch_size": 2 * few, "queue_capacity": 2 * few}
    answers = run(one_batch(model, latest_first(few), refuse=True, **room))
    assert answers.done_at_first == {f"request {i}" for i in range(few)}


def test_a_request_the_wait_would_bring_near_its_deadline_is_answered_without_it(monkeypatch):
    monkeypatch.setattr(batcher_module, "_PACE_GAP_S", 0.05)
    monkeypatch.setattr(batcher_module, "_PACE_SHARE_OF_BATCH", 1e6)
    model = SlowBatches()
    near = 4

    now_s = time.monotonic()
    # The near ones come first anyway (earliest deadline first): HELD_S after the batch
    # starts, a 50 ms wait would bring each within the slack of its deadline.
    deadlines_s = latest_first(REQUESTS - near)
    deadlines_s += [now_s + HELD_S + 0.04 + i / 1000 for i in range(near)]
    answers = run(one_batch(model, deadlines_s, refuse=True))
    near_names = {f"request {i}" for i in range(REQUESTS - near, REQUESTS)}
    assert answers.done_at_first == near_names
    assert answers.order[:near] == sorted(near_names)


def test_pacing_ends_a_while_after_the_last_refusal(monkeypatch):
    monkeypatch.setattr(batcher_module, "_PACE_AFTER_REFUSAL_S", 4 * HELD_S)
    model = SlowBatches()

    async def scenario():
        batcher = full_batcher(model)
        paced = await answered(
            await batch_behind_held_model(model, batcher, latest_first(REQUESTS), refuse=True)
        )
        await asyncio.sleep(6 * HELD_S)
        unpaced = await answered(
            await batch_behind_held_model(model, batcher, latest_first(REQUESTS), refuse=False)
        )
        await batcher.close()
        return paced, unpaced

    paced, unpaced = run(scenario())
    assert len(paced.done_at_first) == 1
    assert len(unpaced.done_at_first) == REQUESTS


def test_closing_mid_way_answers_the_rest_at_once(monkeypatch):
    monkeypatch.setattr(batcher_module, "_PACE_GAP_S", 10.0)  # the rest would take minutes
    monkeypatch.setattr(batcher_module, "_PACE_SHARE_OF_BATCH", 1e6)
    model = SlowBatches()

    async def scenario():
        batcher = full_batcher(model)
        # Deadlines far beyond the pacing's minutes, so none is answered early for its deadline.
        deadlines_s = latest_first(REQUESTS, horizon_s=3600)
        requests = await batch_behind_held_model(model, batcher, deadlines_s, refuse=True)
        futures = [f for fs in requests.values() for f in fs]
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        answered_before_close = sum(f.done() for f in futures)
        closing_s = time.monotonic()
        await batcher.close()
        return answered_before_close, time.monotonic() - closing_s, [f.result() for f in futures]

    answered_before_close, close_s, results = run(scenario())
    assert answered_before_close == 2  # one request of two reviews
    assert close_s < 5, "close waited for the pacing instead of answering the rest"
    assert results == [len(f"review {i}a") * 1.0 for i in range(REQUESTS) for _ in "ab"]


def test_the_gap_keeps_answering_within_half_the_batch_time():
    assert answer_gap_s(8, 1.3) == batcher_module._PACE_GAP_S
    assert answer_gap_s(129, 0.064) == pytest.approx(0.5 * 0.064 / 128)
    assert 128 * answer_gap_s(129, 0.064) <= 0.5 * 0.064 + 1e-12
    assert answer_gap_s(1, 0.0) == 0.0
