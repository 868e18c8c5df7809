"""Asyncio client for the sentiment service: AsyncSentimentClient."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import grpc
import grpc.aio

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

# How often a stream waiting on the server checks how long it has owed a result.
_POLL_S = 0.2


class AsyncSentimentClient:
    """The asyncio twin of SentimentClient: same settings, same errors, awaitable calls.

        async with AsyncSentimentClient("localhost:50051") as client:
            predictions = await client.predict(["A triumph."])
            async for result in client.stream(reviews):
                ...

    Make it inside the event loop that will use it: a grpc.aio channel belongs to one loop.
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
        self._channel = self.config.open_channel(grpc.aio)
        self._stub = sentiment_pb2_grpc.SentimentServiceStub(self._channel)
        self._metadata = self.config.metadata()

    async def __aenter__(self) -> AsyncSentimentClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def predict(
        self, texts: Iterable[str], *, timeout_s: float | None = None
    ) -> list[Prediction]:
        """One prediction per review, in order, from a single Predict call."""
        reviews = review_list(texts)
        if not reviews:
            return []
        request = sentiment_pb2.PredictRequest(reviews=reviews)
        try:
            response = await self._stub.Predict(
                request, timeout=self.config.call_timeout_s(timeout_s), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return predictions_from_proto(response, len(reviews))

    async def explain(self, text: str, *, timeout_s: float | None = None) -> Explanation:
        """As SentimentClient.explain: the prediction and each word's span and attribution."""
        review = single_review(text)
        try:
            response = await self._stub.Explain(
                sentiment_pb2.ExplainRequest(review=review),
                timeout=self.config.call_timeout_s(timeout_s),
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return explanation_from_proto(response, review)

    async def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        try:
            response = await self._stub.GetModelInfo(
                sentiment_pb2.GetModelInfoRequest(),
                timeout=self.config.call_timeout_s(timeout_s),
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        return model_info_from_proto(response)

    async def stream(
        self,
        reviews: Iterable[Review] | AsyncIterable[Review],
        *,
        stream_timeout_s: float | None = None,
    ) -> AsyncIterator[StreamResult]:
        """Streams reviews through StreamPredict; yields one result per review, in input order.

        Behaves as SentimentClient.stream. Leaving the loop early cancels the
        call once the generator is closed (`contextlib.aclosing` makes that prompt).
        """
        call = self._stub.StreamPredict(
            timeout=self.config.call_timeout_s(stream_timeout_s, "stream_timeout_s"),
            metadata=self._metadata,
        )
        ledger = StreamLedger()
        window = asyncio.Semaphore(self.config.max_in_flight)
        input_errors: list[Exception] = []
        writer = asyncio.ensure_future(_write(call, reviews, ledger, window, input_errors))
        try:
            while True:
                response = await self._read(call, ledger)
                if response is grpc.aio.EOF:
                    break
                for result in ledger.received(response):
                    window.release()
                    yield result
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        finally:
            writer.cancel()
            call.cancel()
        if input_errors:
            raise input_errors[0]
        if ledger.unanswered:
            raise ProtocolError(f"the stream ended with {ledger.unanswered} reviews unanswered")

    async def _read(
        self, call: grpc.aio.StreamStreamCall, ledger: StreamLedger
    ) -> sentiment_pb2.StreamPredictResponse | object:
        """The next response, or DeadlineExceededError once the server owes one for timeout_s."""
        read = asyncio.ensure_future(call.read())
        waiting_since = time.monotonic()
        while True:
            done, _ = await asyncio.wait({read}, timeout=_POLL_S)
            if done:
                return read.result()
            if ledger.overdue_s(waiting_since, time.monotonic()) > self.config.timeout_s:
                read.cancel()
                raise DeadlineExceededError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no stream result for {self.config.timeout_s:g}s "
                    f"with {ledger.unanswered} reviews unanswered",
                )


async def _write(
    call: grpc.aio.StreamStreamCall,
    reviews: Iterable[Review] | AsyncIterable[Review],
    ledger: StreamLedger,
    window: asyncio.Semaphore,
    input_errors: list[Exception],
) -> None:
    """Sends reviews as fast as the window allows, then half-closes the stream."""
    try:
        async for item in _aiter(reviews):
            caller_id, text = split_review(item)
            await window.acquire()
            request = sentiment_pb2.StreamPredictRequest(id=ledger.sent(caller_id), review=text)
            await call.write(request)
    except grpc.RpcError:
        return  # the call is over; the reader sees why
    except asyncio.InvalidStateError:
        return  # gRPC's way of saying the same when the call finished mid-write
    except Exception as exc:  # re-raised by the reader once earlier reviews are answered
        input_errors.append(exc)
    try:
        await call.done_writing()
    except (grpc.RpcError, asyncio.InvalidStateError):
        pass  # the call is already over


async def _aiter(reviews: Iterable[Review] | AsyncIterable[Review]) -> AsyncIterator[Review]:
    if isinstance(reviews, AsyncIterable):
        async for item in reviews:
            yield item
    else:
        for item in reviews:
            yield item
