"""Why this score: a review's words with their spans and signed attributions, and the Explainer
that computes them on a worker thread of their own, beside Predict's batcher.

The model supplies token ids and the path's scores and gradients
(server/scoring/integrated_gradients.py); adaptive_quadrature.py integrates them.
The method, stated with every answer as Captum does: integrated gradients over
each token's presence, from a baseline of as many unknown words (every token's
embedding the `[UNK]` id's) to the review, by Gauss-Legendre quadrature: 8 nodes
over the whole path when that is complete, else composite, on segments of the
path chosen where the score moves (a forward-only scan), refined until
the segments' errors add up to at most `TOLERANCE` of score(review) -
score(baseline) (each segment's exact integral is known: score(end) -
score(start)) or the rounds run out; `steps` is the number of nodes, the
remaining gap is reported as `convergence_delta`, and nothing is rescaled.

Explain work never enters Predict's queue: the Explainer runs one explanation
at a time on its own thread and admits at most `queue_capacity` (waiting or
running), refusing the rest with QueueFullError. Given a ModelGate
(server/batching/model_gate.py), an explanation starts only once Predict has left the
model idle for a moment, so a flood of Explain calls delays no batch beyond one
explanation that began in an idle moment; under a Predict load that keeps the
model busy, Explain calls wait (up to their deadline).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from server.batching.model_gate import ModelGate
from server.errors import (
    NO_WORDS,
    DeadlineExceededError,
    InferenceError,
    InvalidReviewError,
    QueueFullError,
    ServiceError,
    ShuttingDownError,
)
from server.explanations.adaptive_quadrature import integrate
from server.explanations.word_spans import words
from training.token_ids import OOV_ID

METHOD = "integrated_gradients"
BASELINE = "unknown words: every token the model saw, as the [UNK] embedding vector (same length)"
# Completeness: |sum of attributions - (score - baseline score)| within 5% of the latter,
# or within 1e-4 when score and baseline barely differ (float32 rounding, not the method).
TOLERANCE = 0.05
ABSOLUTE_TOLERANCE = 1e-4

# Word statuses: only "scored" and "out_of_vocabulary" words carry an attribution.
SCORED = "scored"
# The model saw [UNK] there: attributed, 0 (the baseline's word is [UNK] too).
OUT_OF_VOCABULARY = "out_of_vocabulary"
BEYOND_MAXLEN = "beyond_maxlen"  # before the last maxlen tokens: never reached the model
REMOVED = "removed"  # standardisation left nothing of it (punctuation, emoji, other scripts)


class ExplainableModel(Protocol):
    """What explaining needs of a model version (ServingModel has it all)."""

    version: int
    decision_threshold: float
    maxlen: int
    standardizer: str  # word_spans' name of the model's standardiser

    def token_ids(self, review: str) -> list[int]: ...

    def vocabulary_ids(self, tokens: Sequence[str]) -> list[int]: ...

    def presence_scores(self, ids: Sequence[int], presences: np.ndarray) -> np.ndarray: ...

    def presence_gradients(
        self, ids: Sequence[int], presences: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class WordAttribution:
    """One word: `review[start:end]` (code points), its token, status and attribution.

    `attribution` is the word's share of score(review) - score(baseline), signed
    towards POSITIVE; None for words the model never saw.
    """

    start: int
    end: int
    token: str | None
    status: str
    attribution: float | None = None


@dataclass(frozen=True)
class Explanation:
    """A score and where it came from, word by word, with the method's own error."""

    score: float
    model_version: int
    decision_threshold: float
    words: tuple[WordAttribution, ...]
    baseline_score: float
    steps: int
    convergence_delta: float  # sum of attributions - (score - baseline_score)
    method: str = METHOD
    baseline: str = BASELINE

    @property
    def is_positive(self) -> bool:
        return self.score >= self.decision_threshold


def explain_review(
    model: ExplainableModel, review: str, should_stop: threading.Event | None = None
) -> Explanation:
    """Explains one review with `model`; raises InvalidReviewError for a review with no words."""
    found = words(review, model.standardizer)
    tokens = [w.token for w in found if w.token is not None]
    ids = model.token_ids(review)
    if model.vocabulary_ids(tokens) != ids:
        # The Python mirror of the standardiser disagrees with the model's: the spans would lie.
        raise InferenceError(
            f"cannot map this review's {len(ids)} tokens to its text "
            f"(found {len(tokens)} words); please report the review"
        )
    if not ids:
        raise InvalidReviewError(NO_WORDS)
    first_seen = max(0, len(ids) - model.maxlen)
    seen = ids[first_seen:]
    path = integrate(
        lambda presences: model.presence_scores(seen, presences),
        lambda presences: model.presence_gradients(seen, presences),
        lambda gap: max(TOLERANCE * abs(gap), ABSOLUTE_TOLERANCE),
        should_stop,
    )
    return Explanation(
        score=path.score,
        model_version=model.version,
        decision_threshold=model.decision_threshold,
        words=tuple(_attributed(found, ids, first_seen, path.attributions.tolist())),
        baseline_score=path.baseline_score,
        steps=path.nodes,
        convergence_delta=path.convergence_delta,
    )


def _attributed(
    found: list, ids: list[int], first_seen: int, attributions: list[float]
) -> list[WordAttribution]:
    """Each word with its status, and its attribution if the model saw it."""
    result = []
    index = 0  # token index into ids
    for word in found:
        if word.token is None:
            result.append(WordAttribution(word.start, word.end, None, REMOVED))
            continue
        if index < first_seen:
            result.append(WordAttribution(word.start, word.end, word.token, BEYOND_MAXLEN))
        else:
            status = OUT_OF_VOCABULARY if ids[index] == OOV_ID else SCORED
            attribution = float(attributions[index - first_seen])
            result.append(WordAttribution(word.start, word.end, word.token, status, attribution))
        index += 1
    return result


@dataclass
class ExplainerStats:
    """Counters since start."""

    explained: int = 0
    failed: int = 0
    dropped_cancelled: int = 0
    dropped_expired: int = 0
    rejected_full: int = 0
    admitted: int = 0  # waiting or running now
    compute_s_total: float = 0.0
    started_at_s: float = field(default_factory=time.monotonic)


class ModelSource(Protocol):
    @property
    def current(self) -> ExplainableModel: ...


class Explainer:
    """Explains reviews one at a time on its own worker thread; at most `queue_capacity` admitted.

    Use from one event loop: `await explainer.explain(review, deadline_s)`; a caller
    that goes away or whose deadline passes before its turn is dropped unexplained.
    """

    def __init__(
        self,
        models: ModelSource,
        *,
        queue_capacity: int,
        gate: ModelGate | None = None,
        on_explained=None,
    ):
        if type(queue_capacity) is not int or queue_capacity < 1:
            raise ValueError(f"queue_capacity must be an integer >= 1, got {queue_capacity!r}")
        self._models = models
        self._gate = gate
        self.queue_capacity = queue_capacity
        self._on_explained = on_explained  # called with the seconds each explanation took
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False
        self._stats = ExplainerStats()

    def stats(self) -> ExplainerStats:
        return ExplainerStats(**vars(self._stats))

    async def explain(self, review: str, deadline_s: float) -> Explanation:
        """The review's Explanation; raises a ServiceError (QueueFullError when full)."""
        if self._closing:
            raise ShuttingDownError("the server is shutting down and takes no new reviews")
        if self._stats.admitted >= self.queue_capacity:
            self._stats.rejected_full += 1
            raise QueueFullError(
                f"the Explain queue is full ({self._stats.admitted} of {self.queue_capacity} "
                "explanations waiting or running); retry later",
                retry_after_ms=self._retry_after_ms(),
            )
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="explain"
            )
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        self._stats.admitted += 1
        # A fresh context: the worker must not log under this caller's request id later.
        job = loop.run_in_executor(
            self._executor, contextvars.Context().run, self._run, review, deadline_s, stop
        )
        job.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(
                asyncio.shield(job), max(0.0, deadline_s - time.monotonic())
            )
        except asyncio.TimeoutError:
            stop.set()
            raise DeadlineExceededError(
                "no explanation within the deadline; Explain work is queued one review at a time"
            ) from None
        except asyncio.CancelledError:
            stop.set()  # the caller went away: skip the work if it has not started
            raise

    def _run(self, review: str, deadline_s: float, stop: threading.Event) -> Explanation:
        if stop.is_set():
            self._stats.dropped_cancelled += 1
            raise DeadlineExceededError("the caller left before its turn")
        if time.monotonic() >= deadline_s:
            self._stats.dropped_expired += 1
            raise DeadlineExceededError("the deadline passed while the review was queued")
        gate = self._gate.behind() if self._gate is not None else contextlib.nullcontext()
        try:
            with gate:
                started_s = time.monotonic()
                if stop.is_set():  # left while Predict had the model
                    self._stats.dropped_cancelled += 1
                    raise DeadlineExceededError("the caller left before its turn")
                explanation = explain_review(self._models.current, review, stop)
        except (InvalidReviewError, DeadlineExceededError):
            raise
        except ServiceError:
            self._stats.failed += 1
            raise
        except Exception as exc:
            self._stats.failed += 1
            raise InferenceError(f"the model failed to explain the review: {exc}") from exc
        elapsed_s = time.monotonic() - started_s
        self._stats.explained += 1
        self._stats.compute_s_total += elapsed_s
        if self._on_explained is not None:
            self._on_explained(elapsed_s)
        return explanation

    def _finished(self, job: asyncio.Future) -> None:
        self._stats.admitted -= 1
        if not job.cancelled():
            job.exception()  # retrieved, so an abandoned job's error is not logged as lost

    def _retry_after_ms(self) -> int:
        done = self._stats.explained
        mean_ms = 1000 * self._stats.compute_s_total / done if done else 200.0
        return max(1, math.ceil(self._stats.admitted * mean_ms))

    async def close(self) -> None:
        """Refuses new work; explanations already admitted finish on the worker thread."""
        self._closing = True
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
