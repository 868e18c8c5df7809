"""Micro-batcher: one bounded queue of reviews from every caller, scored in batches off the loop.

Standard library only: the model is any `predict(list[str])` callable that
returns, per review, a float or an Exception that fails only that review
(Ray Serve style). The design follows Ray Serve's batcher and TEI's queue:

- every caller waits on its own future, and every exit path resolves every
  future (a result, the review's own error, or the batch's error);
- a lone review on an idle model runs at once (TEI: no fixed wait when the
  backend is free); reviews that arrived while a batch was running wait for
  company: until `max_batch_size` are queued or `max_delay_ms` after the
  oldest arrived, whichever is first;
- except right after a batch of several: its callers may call again at once
  (a closed loop, like a load test), so the next batch waits for them, at
  most half as long as that batch took, and that wait is skipped for a while
  when it came to nothing. Otherwise the callers split into two groups that
  take turns, each half the size and paying the batch's fixed cost twice;
- callers that went away, and reviews whose deadline passed, are dropped
  before inference (Ray's ray#50046 was a batcher stuck on cancelled callers);
- admission is all-or-nothing per request, and a full queue is refused with
  a retry hint rather than allowed to grow;
- so is a request whose reviews would still be queued when its deadline
  passes, by an estimate from the batches just run (server.batching.wait_estimate):
  when the model slows down, callers are told at once instead of each one
  waiting out its deadline in a queue that is not full;
- while admission is refusing, a batch's answers go out a request at a time,
  earliest deadline first, a little apart: each answer is a few event-loop
  turns of gRPC work, and all of a full batch's at once would hold every
  refusal that arrives meanwhile behind them (tens of ms; bench/slowdown.py
  measures it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from server.batching.wait_estimate import WaitEstimate
from server.errors import (
    DeadlineExceededError,
    InferenceError,
    QueueFullError,
    ShuttingDownError,
)

# After regroups that came to nothing, at most this many batches go by before the next try.
_MAX_REGROUP_SKIPS = 63
# Admission keeps this share of a request's time to its deadline in hand: the estimate ends
# when the batch does, but the answer still has to reach the caller, whose deadline began
# before the request reached the server.
_DEADLINE_MARGIN = 0.1
# Callers in a loop are back within tens of milliseconds however slow the model is: a 10x
# slower model must not make the next batch wait 10x longer for them (and the reviews queued
# meanwhile, admitted on the estimate of the batches alone, past their deadlines).
_MAX_REGROUP_WAIT_S = 0.05
# For this long after a refusal the model is behind, and a finished batch's answers are handed
# out a request at a time this far apart (each costs the event loop about 0.3 ms of gRPC work
# here), within this share of the time the batch took, so that answering never falls behind the
# model; a batch answering fewer requests than _PACE_MIN_REQUESTS holds a refusal a few ms at
# most, and answers at once.
_PACE_AFTER_REFUSAL_S = 1.0
_PACE_GAP_S = 0.002
_PACE_SHARE_OF_BATCH = 0.5
_PACE_MIN_REQUESTS = 16
# A paced request is answered without its wait when that would leave it less than this before
# its deadline: the answer still has to reach the caller.
_PACE_DEADLINE_SLACK_S = 0.01

PredictFn = Callable[[list[str]], Sequence[float | BaseException]]

# Named as before the subpackages, so that log filters still match.
logger = logging.getLogger("server.batcher")


@dataclass(eq=False)
class PendingReview:
    """One queued review and the future its caller awaits."""

    review: str
    future: asyncio.Future[float]
    enqueued_at_s: float  # time.monotonic() at admission
    deadline_s: float | None = None  # time.monotonic() deadline; None: none
    request: int = 0  # which submit() it came with: a request's reviews are answered together


@dataclass(frozen=True)
class BatchRecord:
    """What one batch did, for an observer (e.g. Prometheus histograms)."""

    size: int
    queue_waits_s: tuple[float, ...]  # per review: admission to the batch's start
    inference_s: float
    failed: bool


@dataclass
class BatcherStats:
    """Counters since start; queue wait and inference time are kept apart (TEI)."""

    batches: int = 0
    reviews: int = 0  # reviews that reached the model
    failed_batches: int = 0
    dropped_cancelled: int = 0
    dropped_expired: int = 0
    rejected_full: int = 0  # reviews refused because the queue was full
    rejected_late: int = 0  # reviews refused because the work ahead would outlast their deadline
    queue_depth: int = 0  # reviews waiting now, not counting callers that left
    queue_wait_s_total: float = 0.0  # summed over reviews that reached the model
    inference_s_total: float = 0.0  # summed over batches
    max_batch_size_seen: int = 0
    started_at_s: float = field(default_factory=time.monotonic)
    estimated_review_s: float | None = None  # what admission expects a review to cost now

    @property
    def mean_batch_size(self) -> float:
        return self.reviews / self.batches if self.batches else 0.0

    @property
    def mean_queue_wait_ms(self) -> float:
        return 1000 * self.queue_wait_s_total / self.reviews if self.reviews else 0.0

    @property
    def mean_inference_ms(self) -> float:
        return 1000 * self.inference_s_total / self.batches if self.batches else 0.0

    def summary(self) -> str:
        return (
            f"batches={self.batches} reviews={self.reviews} "
            f"mean_batch_size={self.mean_batch_size:.2f} queue_depth={self.queue_depth} "
            f"mean_queue_wait_ms={self.mean_queue_wait_ms:.2f} "
            f"mean_inference_ms={self.mean_inference_ms:.2f} failed_batches={self.failed_batches} "
            f"dropped_cancelled={self.dropped_cancelled} dropped_expired={self.dropped_expired} "
            f"rejected_full={self.rejected_full} rejected_late={self.rejected_late}"
        )


class MicroBatcher:
    """Gathers reviews from concurrent callers into batches for one `predict` callable.

    Use from one event loop: `futures = batcher.submit(reviews)`, then await
    them; `await batcher.close()` drains and stops. Inference runs on one
    worker thread, so at most one batch is in the model at a time.
    """

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        queue_capacity: int,
        deadline_admission: bool = True,
        on_batch: Callable[[BatchRecord], None] | None = None,
    ):
        if type(max_batch_size) is not int or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        if not isinstance(max_delay_ms, (int, float)) or not 0 <= max_delay_ms < math.inf:
            raise ValueError(f"max_delay_ms must be a finite number >= 0, got {max_delay_ms!r}")
        if type(queue_capacity) is not int or queue_capacity < 1:
            raise ValueError(f"queue_capacity must be an integer >= 1, got {queue_capacity!r}")
        self._predict = predict
        self._on_batch = on_batch
        self.max_batch_size = max_batch_size
        self.max_delay_ms = max_delay_ms
        self.queue_capacity = queue_capacity
        self.deadline_admission = deadline_admission
        self._queue: deque[PendingReview] = deque()
        self._arrived = asyncio.Event()
        # A review queued before this instant arrived while the model was busy.
        self._idle_since_s = -math.inf
        # Regrouping after a batch of several (see _plan_regroup): until when, for how many,
        # and how many batches to skip it for after regroups that came to nothing.
        self._regroup_until_s = -math.inf
        self._regroup_size = 0
        self._regroup_skips = 0
        self._regroup_countdown = 0
        self._estimate = WaitEstimate(max_batch_size)
        # The batch in the model now: since when (time.monotonic()) and how many reviews.
        self._running_since_s: float | None = None
        self._running_size = 0
        self._closing = False
        self._task: asyncio.Task | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._stats = BatcherStats()
        self._requests = itertools.count()
        # The last refusal (time.monotonic()), and the tasks answering batches paced since.
        self._refused_at_s = -math.inf
        self._paced_answers: set[asyncio.Task] = set()

    # -- callers' side -------------------------------------------------------------

    def submit(
        self, reviews: Sequence[str], deadline_s: float | None = None
    ) -> list[asyncio.Future[float]]:
        """Queues all of `reviews` or none; returns one future per review, in order.

        Raises QueueFullError when they do not all fit, or when the work queued
        ahead of them would outlast `deadline_s`, and ShuttingDownError after
        close(). `deadline_s` is a time.monotonic() instant: a review still
        queued then fails with DeadlineExceededError instead of running.
        """
        if self._closing:
            raise ShuttingDownError("the server is shutting down and takes no new reviews")
        self._estimate.arrived(len(reviews), time.monotonic())
        if len(self._queue) + len(reviews) > self.queue_capacity:
            self._discard_cancelled()
        if len(self._queue) + len(reviews) > self.queue_capacity:
            self._stats.rejected_full += len(reviews)
            self._refused_at_s = time.monotonic()
            raise QueueFullError(
                f"the queue is full ({len(self._queue)} of {self.queue_capacity} reviews "
                f"waiting; this request has {len(reviews)}); retry later",
                retry_after_ms=self._retry_after_ms(),
            )
        if deadline_s is not None and self.deadline_admission:
            self._refuse_if_late(len(reviews), deadline_s)
        self._ensure_running()
        loop = asyncio.get_running_loop()
        now_s = time.monotonic()
        request = next(self._requests)
        pending = [
            PendingReview(r, loop.create_future(), now_s, deadline_s, request) for r in reviews
        ]
        self._queue.extend(pending)
        self._arrived.set()
        return [p.future for p in pending]

    async def predict(self, review: str, deadline_s: float | None = None) -> float:
        """Scores one review through the queue (convenience for single callers)."""
        (future,) = self.submit([review], deadline_s)
        return await future

    def has_waiting(self) -> bool:
        """Whether reviews are queued; safe from any thread (len of a deque is atomic)."""
        return len(self._queue) > 0

    def stats(self) -> BatcherStats:
        """A snapshot of the counters."""
        # Only reviews whose callers are still waiting: cancelled ones are dropped lazily.
        waiting = sum(1 for p in self._queue if not p.future.done())
        return dataclasses.replace(
            self._stats, queue_depth=waiting, estimated_review_s=self._estimate.review_s
        )

    async def close(self, drain_timeout_s: float | None = None) -> None:
        """Refuses new reviews, scores what is queued (up to `drain_timeout_s`), then stops.

        Whatever is still queued when the time is up fails with ShuttingDownError.
        """
        self._closing = True
        self._arrived.set()
        task, self._task = self._task, None
        try:
            await self._drain(task, drain_timeout_s)
        finally:
            # Answers still being paced out are ready: hand out the rest at once.
            for answering in list(self._paced_answers):
                answering.cancel()
            await asyncio.gather(*self._paced_answers, return_exceptions=True)
        self._fail_queued(ShuttingDownError("the server shut down before this review was scored"))
        if self._executor is not None:
            # The worker may still be inside predict after a timeout; do not block on it.
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _drain(self, task: asyncio.Task | None, drain_timeout_s: float | None) -> None:
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), drain_timeout_s)
            except asyncio.TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except asyncio.CancelledError:
                task.cancel()
                raise
            except Exception:
                pass  # the loop has logged its own failure; callers were failed on its way out

    # -- the batching loop ---------------------------------------------------------

    def _ensure_running(self) -> None:
        # done(): a loop that died of a bug is restarted rather than left to strand callers.
        if self._task is None or self._task.done():
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="inference"
                )
            loop = asyncio.get_running_loop()
            # The loop serves every caller: it must not inherit this caller's context
            # (its request id would label every later batch's log lines).
            self._task = contextvars.Context().run(
                loop.create_task, self._run(), name="micro-batcher"
            )

    async def _run(self) -> None:
        try:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    return
                await self._run_batch(batch)
        except Exception:
            logger.exception("micro-batcher loop failed")
            raise
        finally:
            # Whatever ends the loop (close, cancellation, a bug), no caller may wait forever.
            self._fail_queued(
                ShuttingDownError("the batcher stopped before this review was scored")
            )

    async def _next_batch(self) -> list[PendingReview] | None:
        """Waits for work and returns the next batch of live reviews; None once closed and empty."""
        while True:
            while not self._queue:
                if self._closing:
                    return None
                self._arrived.clear()
                await self._arrived.wait()
            oldest_s = self._queue[0].enqueued_at_s
            if self._closing:
                pass
            elif oldest_s < self._regroup_until_s:
                # Callers of the batch that just ended may be calling again at once (a closed
                # loop): gather them with what queued meanwhile, rather than run the first
                # few alone and split the callers into groups that then take turns.
                gathered = await self._wait_for_company(self._regroup_until_s, self._regroup_size)
                skips = 0 if gathered else min(self._regroup_skips * 2 + 1, _MAX_REGROUP_SKIPS)
                self._regroup_skips = skips
                self._regroup_countdown = self._regroup_skips
            elif oldest_s < self._idle_since_s:
                await self._wait_for_company(
                    oldest_s + self.max_delay_ms / 1000, self.max_batch_size
                )
            batch = self._take_live_reviews()
            if batch:
                return batch

    async def _wait_for_company(self, flush_at_s: float, wanted: int) -> bool:
        """Waits until `wanted` reviews (at most a full batch) are queued, or until flush_at_s;
        True if they were."""
        # A full queue can take no more company, even if it holds less than a batch.
        enough = min(wanted, self.max_batch_size, self.queue_capacity)
        while len(self._queue) < enough and not self._closing:
            remaining_s = flush_at_s - time.monotonic()
            if remaining_s <= 0:
                return False
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining_s)
            except asyncio.TimeoutError:
                return False
        return len(self._queue) >= enough

    def _take_live_reviews(self) -> list[PendingReview]:
        """Pops up to `max_batch_size` reviews, dropping cancelled callers and expired deadlines."""
        now_s = time.monotonic()
        batch: list[PendingReview] = []
        while self._queue and len(batch) < self.max_batch_size:
            pending = self._queue.popleft()
            if pending.future.done():
                self._stats.dropped_cancelled += 1
            elif pending.deadline_s is not None and pending.deadline_s <= now_s:
                self._stats.dropped_expired += 1
                pending.future.set_exception(
                    DeadlineExceededError("the deadline passed while the review was queued")
                )
            else:
                batch.append(pending)
        return batch

    async def _run_batch(self, batch: list[PendingReview]) -> None:
        started_s = time.monotonic()
        self._running_since_s, self._running_size = started_s, len(batch)
        queue_waits_s = tuple(started_s - p.enqueued_at_s for p in batch)
        self._stats.queue_wait_s_total += sum(queue_waits_s)
        failed = True
        texts = [p.review for p in batch]
        try:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._executor, self._predict, texts)
            if len(results) != len(batch):
                raise InferenceError(
                    f"the model returned {len(results)} results for {len(batch)} reviews"
                )
        except asyncio.CancelledError:
            for pending in batch:
                _fail(pending, ShuttingDownError("the server shut down while scoring this review"))
            raise
        except Exception as exc:
            self._stats.failed_batches += 1
            logger.exception("model failed on a batch of %d reviews", len(batch))
            message = f"the model failed on a batch of {len(batch)} reviews: {exc}"
            for pending in batch:
                error = InferenceError(message)
                error.__cause__ = exc
                _fail(pending, error)
        else:
            failed = False
            answers = [(p, _as_outcome(r)) for p, r in zip(batch, results, strict=True)]
            requests = _by_request(answers) if self._refusing() else []
            if len(requests) >= _PACE_MIN_REQUESTS:
                gap_s = answer_gap_s(len(requests), time.monotonic() - started_s)
                answering = asyncio.get_running_loop().create_task(
                    _answer_paced(requests, gap_s), name="paced-answers"
                )
                self._paced_answers.add(answering)
                answering.add_done_callback(self._paced_answers.discard)
                # Cancelled (the batcher closing), even before it ran: the rest at once.
                answering.add_done_callback(
                    lambda _: _answer_all(list(itertools.chain.from_iterable(requests)))
                )
            else:
                _answer_all(answers)
        finally:
            finished_s = time.monotonic()
            self._running_since_s = None
            self._estimate.observe(len(batch), finished_s - started_s)
            self._idle_since_s = finished_s
            self._plan_regroup(len(batch), finished_s - started_s)
            self._stats.batches += 1
            self._stats.reviews += len(batch)
            self._stats.inference_s_total += finished_s - started_s
            self._stats.max_batch_size_seen = max(self._stats.max_batch_size_seen, len(batch))
            self._report(BatchRecord(len(batch), queue_waits_s, finished_s - started_s, failed))

    def _plan_regroup(self, batch_size: int, inference_s: float) -> None:
        """After a batch of several, the next batch may wait for its callers to come back:
        for at most half the time the batch took (so waiting for callers who do not come
        costs the model a third of its time at worst) and _MAX_REGROUP_WAIT_S, and not at
        all for the next
        1, 3, 7 ... batches after regroups that came to nothing (callers not in a loop)."""
        self._regroup_until_s = -math.inf
        if batch_size < 2:
            return
        if self._regroup_countdown:
            self._regroup_countdown -= 1
            return
        self._regroup_until_s = self._idle_since_s + min(inference_s / 2, _MAX_REGROUP_WAIT_S)
        self._regroup_size = len(self._queue) + batch_size

    # -- helpers -------------------------------------------------------------------

    def _report(self, record: BatchRecord) -> None:
        if self._on_batch is None:
            return
        try:
            self._on_batch(record)
        except Exception:  # an observer's bug must not fail the batch's callers
            logger.exception("the batch observer failed")

    def _refusing(self) -> bool:
        return time.monotonic() - self._refused_at_s < _PACE_AFTER_REFUSAL_S

    def _discard_cancelled(self) -> None:
        live = [p for p in self._queue if not p.future.done()]
        self._stats.dropped_cancelled += len(self._queue) - len(live)
        self._queue = deque(live)

    def _fail_queued(self, error: ShuttingDownError) -> None:
        while self._queue:
            _fail(self._queue.popleft(), ShuttingDownError(str(error)))

    def _refuse_if_late(self, count: int, deadline_s: float) -> None:
        """QueueFullError if `count` more reviews would be scored only after `deadline_s`
        (less the margin kept in hand).

        O(1): the queue's length, not its contents (callers that left but are still
        queued count, which errs towards refusing only when callers are already
        timing out). A lone request on an idle model always runs, so an estimate
        left high by a slowdown that has ended cannot refuse it; its batch then
        brings the estimate down.
        """
        if not self._queue and self._running_since_s is None:
            return
        now_s = time.monotonic()
        wait_s = self._wait_s(len(self._queue) + count, now_s)
        if wait_s is None or wait_s <= (1 - _DEADLINE_MARGIN) * (deadline_s - now_s):
            return
        self._stats.rejected_late += count
        self._refused_at_s = now_s
        raise QueueFullError(
            f"the work queued ahead would outlast this request's deadline: about "
            f"{1000 * wait_s:.0f} ms until its reviews would be scored ({len(self._queue)} "
            f"queued ahead), and its deadline is {1000 * max(0.0, deadline_s - now_s):.0f} ms "
            f"away (admission keeps {_DEADLINE_MARGIN:.0%} of that in hand); retry later",
            retry_after_ms=self._retry_after_ms(),
        )

    def _wait_s(self, reviews: int, now_s: float) -> float | None:
        """The estimate's wait for `reviews` queued reviews, behind the batch running now."""
        running_for_s = None if self._running_since_s is None else now_s - self._running_since_s
        return self._estimate.wait_s(reviews, self._running_size, running_for_s)

    def _retry_after_ms(self) -> int:
        """A guess at how long the queue takes to drain: the estimate's wait for the reviews
        queued now, else (no batch has run yet) batches ahead x mean batch time."""
        batches_ahead = math.ceil(len(self._queue) / self.max_batch_size)
        batch_ms = self._stats.mean_inference_ms or self.max_delay_ms
        wait_ms = batches_ahead * max(batch_ms, self.max_delay_ms)
        wait_s = self._wait_s(len(self._queue), time.monotonic())
        if wait_s is not None:
            wait_ms = max(1000 * wait_s, self.max_delay_ms)
        return max(1, math.ceil(wait_ms))


Answer = tuple[PendingReview, float | BaseException]


def answer_gap_s(requests: int, batch_s: float) -> float:
    """The time between a paced batch's requests' answers: _PACE_GAP_S, less if `requests`
    that far apart would take more than _PACE_SHARE_OF_BATCH of the `batch_s` the batch took."""
    return min(_PACE_GAP_S, _PACE_SHARE_OF_BATCH * batch_s / max(1, requests - 1))


def _by_request(answers: Sequence[Answer]) -> list[list[Answer]]:
    """A batch's answers grouped by request, earliest deadline first (no deadline last)."""
    requests: dict[int, list[Answer]] = {}
    for answer in answers:
        requests.setdefault(answer[0].request, []).append(answer)
    return sorted(requests.values(), key=lambda request: _deadline_or_never(request[0][0]))


def _answer(pending: PendingReview, outcome: float | BaseException) -> None:
    """Resolves one caller's future, unless the caller already went away."""
    if pending.future.done():  # the caller went away during inference
        return
    if isinstance(outcome, BaseException):
        pending.future.set_exception(outcome)
    else:
        pending.future.set_result(outcome)


def _answer_all(answers: Sequence[Answer]) -> None:
    for pending, outcome in answers:
        _answer(pending, outcome)


async def _answer_paced(requests: Sequence[Sequence[Answer]], gap_s: float) -> None:
    """Answers one request every `gap_s`, in the order given; without the wait for a request
    whose deadline the wait would bring within _PACE_DEADLINE_SLACK_S (the answer's way back)."""
    for index, request in enumerate(requests):
        left_s = _deadline_or_never(request[0][0]) - time.monotonic()
        if index and left_s > gap_s + _PACE_DEADLINE_SLACK_S:
            await asyncio.sleep(gap_s)
        _answer_all(request)


def _as_outcome(result: object) -> float | BaseException:
    """A model result as a score or an exception; never raises, so no future is left behind."""
    if isinstance(result, StopIteration):  # a future cannot hold one (set_exception refuses it)
        return InferenceError(f"the model returned {result!r} instead of a score")
    if isinstance(result, BaseException):
        return result
    if isinstance(result, float):  # as is: a float subclass may say which model made it
        return result
    try:
        return float(result)
    except (TypeError, ValueError):
        return InferenceError(f"the model returned {result!r} instead of a score")


def _fail(pending: PendingReview, error: BaseException) -> None:
    if not pending.future.done():
        pending.future.set_exception(error)


def _deadline_or_never(pending: PendingReview) -> float:
    return math.inf if pending.deadline_s is None else pending.deadline_s
