"""The gRPC edge: protobuf <-> plain values, request checks, and the one error -> status map.

Knows nothing of TensorFlow: it talks to the MicroBatcher and reads the
serving model's description (version, threshold, metrics) as plain attributes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.batching.batcher import MicroBatcher
from server.errors import (
    DeadlineExceededError,
    ExplainUnavailableError,
    InferenceError,
    InvalidRequestError,
    InvalidReviewError,
    ModelNotFoundError,
    QueueFullError,
    ServiceError,
    ShuttingDownError,
)
from server.explanations.explain import (
    BEYOND_MAXLEN,
    OUT_OF_VOCABULARY,
    REMOVED,
    SCORED,
    Explainer,
    Explanation,
)

# Named as before the subpackages, so that log filters still match.
logger = logging.getLogger("server.servicer")

# gRPC's own retry machinery reads this trailer as "retry after N ms" (gRFC A6).
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


class ModelDescription(Protocol):
    """What the servicer needs to know of the model (ServingModel has it all)."""

    name: str
    version: int
    maxlen: int
    vocabulary_size: int
    decision_threshold: float
    metrics: dict[str, float]
    preset: str


@dataclass(frozen=True)
class RequestLimits:
    max_reviews_per_request: int
    max_review_bytes: int
    default_timeout_ms: float


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The one place a service error becomes a gRPC status: (code, message, trailing metadata)."""
    if isinstance(error, (InvalidReviewError, InvalidRequestError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error), ()
    if isinstance(error, QueueFullError):
        message = f"{error} (retry after about {error.retry_after_ms} ms)"
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            message,
            ((RETRY_PUSHBACK_KEY, str(error.retry_after_ms)),),
        )
    if isinstance(error, DeadlineExceededError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error), ()
    if isinstance(error, ShuttingDownError):
        return grpc.StatusCode.UNAVAILABLE, str(error), ()
    if isinstance(error, InferenceError):
        return grpc.StatusCode.INTERNAL, str(error), ()
    if isinstance(error, ExplainUnavailableError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error), ()
    if isinstance(error, ModelNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(error), ()
    logger.error("unexpected error reached the gRPC edge", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}", ()


class SentimentServicer(sentiment_pb2_grpc.SentimentServiceServicer):
    """Predict, StreamPredict and GetModelInfo over one shared MicroBatcher; Explain beside it."""

    def __init__(
        self,
        model: ModelDescription,
        batcher: MicroBatcher,
        limits: RequestLimits,
        explainer: Explainer | None = None,
    ):
        self._model = model
        self._batcher = batcher
        self._limits = limits
        self._explainer = explainer
        self._draining = False

    def drain(self) -> None:
        """From now on new Predict, StreamPredict and Explain calls are refused with
        UNAVAILABLE; streams already open keep going until the listener's grace ends.

        Called before health says NOT_SERVING: a caller that reacts to that at once
        must not have its call queued behind the in-flight work being drained.
        """
        self._draining = True

    @property
    def draining(self) -> bool:
        """True once drain() was called: the Open Inference Protocol's calls are refused too."""
        return self._draining

    def _refuse_if_draining(self) -> None:
        if self._draining:
            raise ShuttingDownError("the server is shutting down and takes no new reviews")

    async def Predict(
        self, request: sentiment_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> sentiment_pb2.PredictResponse:
        try:
            self._refuse_if_draining()
            scores = await self.score_reviews(list(request.reviews), self._timeout_s(context))
        except Exception as error:  # a ServiceError, or a bug that status_of logs
            code, message, trailers = status_of(error)
            await context.abort(code, message, trailing_metadata=trailers)  # raises
        return sentiment_pb2.PredictResponse(predictions=[self._prediction(s) for s in scores])

    async def StreamPredict(
        self,
        request_iterator: AsyncIterator[sentiment_pb2.StreamPredictRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[sentiment_pb2.StreamPredictResponse]:
        # The reader queues reviews as they arrive so one stream fills batches; this
        # generator answers in arrival order. The bounded `in_flight` queue stops the
        # reader (and, by flow control, the client) when too many await results.
        try:
            self._refuse_if_draining()
        except ShuttingDownError as error:
            code, message, trailers = status_of(error)
            await context.abort(code, message, trailing_metadata=trailers)  # raises
        in_flight: asyncio.Queue = asyncio.Queue(maxsize=self._limits.max_reviews_per_request)
        reader = asyncio.create_task(self._read_stream(request_iterator, in_flight, context))
        try:
            while True:
                item = await in_flight.get()
                if isinstance(item, _StreamEnd):
                    if item.error is not None:
                        raise item.error
                    return
                yield await self._stream_result(item)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            while not in_flight.empty():  # the caller left: drop its queued reviews
                item = in_flight.get_nowait()
                if isinstance(item, _StreamItem) and isinstance(item.outcome, asyncio.Future):
                    item.outcome.cancel()

    async def GetModelInfo(
        self, request: sentiment_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> sentiment_pb2.ModelInfo:
        model = self._model
        return sentiment_pb2.ModelInfo(
            name=model.name,
            version=model.version,
            maxlen=model.maxlen,
            vocabulary_size=model.vocabulary_size,
            decision_threshold=model.decision_threshold,
            metrics=model.metrics,
            preset=model.preset,
        )

    async def Explain(
        self, request: sentiment_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> sentiment_pb2.ExplainResponse:
        try:
            self._refuse_if_draining()
            explanation = await self.explain_review(request.review, self._timeout_s(context))
        except Exception as error:  # a ServiceError, or a bug that status_of logs
            code, message, trailers = status_of(error)
            await context.abort(code, message, trailing_metadata=trailers)  # raises
        return explanation_proto(explanation)

    # -- Predict -------------------------------------------------------------------

    async def score_reviews(self, reviews: list[str], timeout_s: float) -> list[float]:
        """Checks one request's reviews, queues them all and awaits their scores in order.

        Raises a ServiceError. Public so that the HTTP edge (server.api.http_api)
        applies the same checks and limits through the same batcher.
        """
        limit = self._limits.max_reviews_per_request
        if not reviews:
            raise InvalidRequestError("the request has no reviews; send at least one")
        if len(reviews) > limit:
            raise InvalidRequestError(
                f"the request has {len(reviews)} reviews; the limit is {limit} "
                "(split it into several requests, or use StreamPredict)"
            )
        for index, review in enumerate(reviews):
            problem = self._problem_with(review)
            if problem is not None:
                raise InvalidRequestError(problem.for_review(str(index)))
        futures = self._batcher.submit(reviews, deadline_s=time.monotonic() + timeout_s)
        outcomes = await _outcomes_within(futures, timeout_s)
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InvalidReviewError):
                raise InvalidRequestError(outcome.for_review(str(index)))
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    # -- Explain -------------------------------------------------------------------

    async def explain_review(self, review: str, timeout_s: float) -> Explanation:
        """Checks one review as Predict does (same messages, as review 0) and explains it.

        Raises a ServiceError. Public for the HTTP edge, like score_reviews.
        """
        if self._explainer is None:
            raise ExplainUnavailableError("this server was started without Explain")
        problem = self._problem_with(review)
        if problem is not None:
            raise InvalidRequestError(problem.for_review("0"))
        try:
            return await self._explainer.explain(review, time.monotonic() + timeout_s)
        except InvalidReviewError as error:
            raise InvalidRequestError(error.for_review("0")) from None

    # -- StreamPredict -------------------------------------------------------------

    async def _read_stream(self, request_iterator, in_flight: asyncio.Queue, context) -> None:
        try:
            async for request in request_iterator:
                await in_flight.put(self._submit_one(request, context))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the client's stream broke: end ours with its error
            await in_flight.put(_StreamEnd(error))
            return
        await in_flight.put(_StreamEnd(None))

    def _submit_one(self, request, context) -> _StreamItem:
        """Queues one stream review; a refusal becomes that review's error, not the stream's."""
        problem = self._problem_with(request.review)
        if problem is not None:
            return _StreamItem(
                request.id, InvalidRequestError(problem.for_review(f"id {request.id!r}"))
            )
        deadline_s = time.monotonic() + self._timeout_s(context)
        try:
            (future,) = self._batcher.submit([request.review], deadline_s)
        except ServiceError as error:
            return _StreamItem(request.id, error)
        return _StreamItem(request.id, future, deadline_s)

    async def _stream_result(self, item: _StreamItem) -> sentiment_pb2.StreamPredictResponse:
        review_id, outcome = item.review_id, item.outcome
        if isinstance(outcome, asyncio.Future):
            try:
                (outcome,) = await _outcomes_within([outcome], item.deadline_s - time.monotonic())
            except DeadlineExceededError as error:
                outcome = error
        if isinstance(outcome, InvalidReviewError):
            outcome = InvalidRequestError(outcome.for_review(f"id {review_id!r}"))
        if isinstance(outcome, BaseException):
            code, message, _ = status_of(outcome)
            error = sentiment_pb2.Error(code=code.value[0], message=message)
            return sentiment_pb2.StreamPredictResponse(id=review_id, error=error)
        return sentiment_pb2.StreamPredictResponse(
            id=review_id, prediction=self._prediction(outcome)
        )

    # -- shared --------------------------------------------------------------------

    def _problem_with(self, review: str) -> InvalidReviewError | None:
        """Checks done before queuing: cheap, and no tokeniser sees an oversize review."""
        if not review.strip():
            return InvalidReviewError("is empty")
        size_bytes = len(review.encode("utf-8"))
        if size_bytes > self._limits.max_review_bytes:
            return InvalidReviewError(
                f"is {size_bytes} bytes; the limit is {self._limits.max_review_bytes} bytes"
            )
        return None

    def _timeout_s(self, context) -> float:
        """The server's default timeout, or the caller's deadline if that comes sooner."""
        timeout_s = self._limits.default_timeout_ms / 1000
        remaining_s = context.time_remaining()
        return timeout_s if remaining_s is None else min(timeout_s, remaining_s)

    def _prediction(self, score: float) -> sentiment_pb2.Prediction:
        # A VersionedScore (server.scoring.versions) names the version that made it, which
        # may be older than the one serving now if a swap happened during its batch.
        version = getattr(score, "model_version", self._model.version)
        threshold = getattr(score, "decision_threshold", self._model.decision_threshold)
        return sentiment_pb2.Prediction(
            label=sentiment_pb2.POSITIVE if score >= threshold else sentiment_pb2.NEGATIVE,
            score=score,
            model_version=version,
        )


_WORD_STATUS = {
    SCORED: sentiment_pb2.WORD_STATUS_SCORED,
    OUT_OF_VOCABULARY: sentiment_pb2.WORD_STATUS_OUT_OF_VOCABULARY,
    BEYOND_MAXLEN: sentiment_pb2.WORD_STATUS_BEYOND_MAXLEN,
    REMOVED: sentiment_pb2.WORD_STATUS_REMOVED,
}


def explanation_proto(explanation: Explanation) -> sentiment_pb2.ExplainResponse:
    """An Explanation as the Explain RPC answers it."""
    positive = explanation.is_positive
    return sentiment_pb2.ExplainResponse(
        prediction=sentiment_pb2.Prediction(
            label=sentiment_pb2.POSITIVE if positive else sentiment_pb2.NEGATIVE,
            score=explanation.score,
            model_version=explanation.model_version,
        ),
        words=[
            sentiment_pb2.Word(
                start=w.start,
                end=w.end,
                token=w.token or "",
                status=_WORD_STATUS[w.status],
                attribution=w.attribution,  # None leaves the optional field unset
            )
            for w in explanation.words
        ],
        method=sentiment_pb2.AttributionMethod(
            name=explanation.method,
            baseline=explanation.baseline,
            baseline_score=explanation.baseline_score,
            steps=explanation.steps,
            convergence_delta=explanation.convergence_delta,
        ),
    )


@dataclass(frozen=True)
class _StreamItem:
    """One stream review in arrival order: its future, or the error that kept it out."""

    review_id: str
    outcome: asyncio.Future | ServiceError
    deadline_s: float = 0.0  # time.monotonic(); only for a future


@dataclass(frozen=True)
class _StreamEnd:
    """The client's stream ended: cleanly (error None) or broken."""

    error: BaseException | None


async def _outcomes_within(futures: list[asyncio.Future], timeout_s: float) -> list:
    """Each future's result or exception, waiting at most timeout_s.

    On timeout, or if the caller goes away, the unfinished futures are
    cancelled so the batcher drops their reviews before inference.
    """
    try:
        _, pending = await asyncio.wait(futures, timeout=max(timeout_s, 0))
    finally:
        for future in futures:
            future.cancel()  # a no-op for finished ones
    if pending:
        raise DeadlineExceededError(f"no result within the deadline ({1000 * timeout_s:.0f} ms)")
    return [f.exception() or f.result() for f in futures]
