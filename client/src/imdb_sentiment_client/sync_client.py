"""Blocking client for the sentiment service: SentimentClient."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import grpc

from imdb_sentiment_client.config import (
    DEFAULT_MAX_RECONNECT_BACKOFF_S,
    DEFAULT_TARGET,
    ClientConfig,
    RetryPolicy,
    TlsConfig,
)
from imdb_sentiment_client.errors import DeadlineExceededError, ProtocolError, from_rpc_error
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from imdb_sentiment_client.stream_ledger import StreamLedger
from imdb_sentiment_client.types import (
    Explanation,
    ModelInfo,
    Prediction,
    Review,
    StreamResult,
    explanation_from_proto,
    model_info_from_proto,
    predictions_from_proto,
    review_list,
    single_review,
    split_review,
)

# How often a blocked stream checks on the server and on its own caller going away.
_POLL_S = 0.05


class SentimentClient:
    """A connection to a sentiment server. Every call has a deadline; failures raise SentimentError.

        with SentimentClient("localhost:50051", timeout_s=5) as client:
            for p in client.predict(["A triumph.", "Two hours I will never get back."]):
                print(p.label, p.score)

    Settings are described on ClientConfig and checked here (ValueError names the
    bad one). Thread-safe: calls from several threads share one channel. Several
    servers behind one client, each call to one of them in turn:

        SentimentClient("dns:///sentiment-headless:50051", load_balancing="round_robin")
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout_s: float = 10.0,
        stream_timeout_s: float = 3600.0,
        max_in_flight: int = 256,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 (frozen, so sharing is safe)
        tls: TlsConfig | None = None,
        token: str | None = None,
        load_balancing: str = "pick_first",
        max_reconnect_backoff_s: float = DEFAULT_MAX_RECONNECT_BACKOFF_S,
    ) -> None:
        self.config = ClientConfig(
            target,
            timeout_s=timeout_s,
            stream_timeout_s=stream_timeout_s,
            max_in_flight=max_in_flight,
            retry=retry,
            tls=tls,
            token=token,
            load_balancing=load_balancing,
            max_reconnect_backoff_s=max_reconnect_backoff_s,
        )
        self._channel = self.config.open_channel(grpc)
        self._stub = sentiment_pb2_grpc.SentimentServiceStub(self._channel)
        self._metadata = self.config.metadata()

    def __enter__(self) -> SentimentClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def predict(self, texts: Iterable[str], *, timeout_s: float | None = None) -> list[Prediction]:
        """One prediction per review, in order, from a single Predict call.

        A bad review fails the whole call with InvalidReviewError naming its index.
        """
        reviews = review_list(texts)
        if not reviews:
            return []
        request = sentiment_pb2.PredictRequest(reviews=reviews)
        try:
            response = self._stub.Predict(
                request, timeout=self.config.call_timeout_s(timeout_s), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return predictions_from_proto(response, len(reviews))

    def explain(self, text: str, *, timeout_s: float | None = None) -> Explanation:
        """The review's prediction and each word's span and attribution (Explain).

        A bad review raises InvalidReviewError with Predict's message; a full
        Explain queue raises OverloadedError (retried within the deadline by the
        retry policy, like Predict).
        """
        review = single_review(text)
        try:
            response = self._stub.Explain(
                sentiment_pb2.ExplainRequest(review=review),
                timeout=self.config.call_timeout_s(timeout_s),
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return explanation_from_proto(response, review)

    def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        try:
            response = self._stub.GetModelInfo(
                sentiment_pb2.GetModelInfoRequest(),
                timeout=self.config.call_timeout_s(timeout_s),
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return model_info_from_proto(response)

    def stream(
        self, reviews: Iterable[Review], *, stream_timeout_s: float | None = None
    ) -> Iterator[StreamResult]:
        """Streams reviews through StreamPredict; yields one result per review, in input order.

        Reviews are texts or (id, text) pairs, read lazily. Up to max_in_flight
        go out before the first result comes back, so the server can batch them.
        A bad review yields a result carrying its error and the stream goes on;
        a failure of the stream itself raises SentimentError, as does the server
        owing a result for longer than timeout_s (DeadlineExceededError). An
        error raised by `reviews` is raised once the reviews sent before it
        have been answered. Leaving the loop early cancels the call.
        """
        ledger = StreamLedger()
        window = threading.Semaphore(self.config.max_in_flight)
        closed = threading.Event()
        input_errors: list[Exception] = []

        def requests() -> Iterator[sentiment_pb2.StreamPredictRequest]:
            # Runs on gRPC's request thread, which sends each request as soon
            # as it is yielded: the window alone paces the pipeline.
            try:
                for item in reviews:
                    caller_id, text = split_review(item)
                    while not window.acquire(timeout=_POLL_S):
                        if closed.is_set():
                            return
                    if closed.is_set():
                        return
                    yield sentiment_pb2.StreamPredictRequest(id=ledger.sent(caller_id), review=text)
            except Exception as exc:  # re-raised on the caller's thread at the end
                input_errors.append(exc)

        call = self._stub.StreamPredict(
            requests(),
            timeout=self.config.call_timeout_s(stream_timeout_s, "stream_timeout_s"),
            metadata=self._metadata,
        )
        watchdog = _StreamWatchdog(ledger, self.config.timeout_s, call.cancel, closed)
        try:
            while True:
                with watchdog.waiting():
                    response = next(call, None)
                if response is None:
                    break
                for result in ledger.received(response):
                    window.release()
                    yield result
        except grpc.RpcError as exc:
            if watchdog.fired:
                raise watchdog.error() from exc
            raise from_rpc_error(exc) from exc
        finally:
            closed.set()
            call.cancel()  # no-op once the call is over; stops it if the caller left early
        if input_errors:
            raise input_errors[0]
        if ledger.unanswered:
            raise ProtocolError(f"the stream ended with {ledger.unanswered} reviews unanswered")


class _StreamWatchdog:
    """Cancels a stream once the server has owed a result for timeout_s while the caller waited.

    A sync gRPC stream cannot read with a timeout, so a thread polls the ledger
    and cancels the call; the caller's loop then sees CANCELLED, which `fired`
    turns back into DeadlineExceededError.
    """

    def __init__(
        self,
        ledger: StreamLedger,
        timeout_s: float,
        cancel: Callable[[], object],
        closed: threading.Event,
    ) -> None:
        self._ledger = ledger
        self._timeout_s = timeout_s
        self._cancel = cancel
        self._closed = closed
        self._waiting_since: float | None = None
        self.fired = False
        threading.Thread(target=self._run, name="sentiment-stream-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Marks the caller as blocked on the server for the duration of the block."""
        self._waiting_since = time.monotonic()
        try:
            yield
        finally:
            self._waiting_since = None

    def error(self) -> DeadlineExceededError:
        return DeadlineExceededError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"no stream result for {self._timeout_s:g}s "
            f"with {self._ledger.unanswered} reviews unanswered",
        )

    def _run(self) -> None:
        poll_s = min(_POLL_S * 4, self._timeout_s / 4)
        while not self._closed.wait(poll_s):
            since = self._waiting_since
            if (
                since is not None
                and self._ledger.overdue_s(since, time.monotonic()) > self._timeout_s
            ):
                self.fired = True
                self._cancel()
                return
