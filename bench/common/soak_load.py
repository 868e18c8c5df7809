"""The soak's request mix, and the tally that proves every request ended in a result or a status.

Each request is one of a few kinds, drawn by weight from a seeded generator:
valid single- and multi-review Predict calls, StreamPredict calls (some with a
planted bad review), bad inputs of every sort, calls the client cancels (and
streams it abandons half-way), and calls with deadlines too short to meet.
Each kind names the status codes it may end with; any other is "unexpected".
A request is "lost" if no status arrives within its watchdog (its gRPC deadline
plus a margin), or if a result is incomplete (missing predictions, a stream
that ended OK with reviews unanswered or out of order).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc

PREDICT = "/sentiment.v1.SentimentService/Predict"
# Weights of each kind in the mix, out of 100.
MIX = {
    "single": 35,
    "multi": 20,
    "stream": 10,
    "bad_input": 15,
    "cancelled": 10,
    "short_deadline": 10,
}
BAD_INPUTS = ("empty", "whitespace", "wordless", "oversize", "too_many", "invalid_utf8")
# A queue that fills under load may refuse any valid work; that is an answer, not a loss.
_VALID = frozenset({"OK", "RESOURCE_EXHAUSTED"})
EXPECTED = {
    "single": _VALID,
    "multi": _VALID,
    "stream": _VALID,
    "bad_input": frozenset({"INVALID_ARGUMENT"}),
    "cancelled": _VALID | {"CANCELLED"},
    "short_deadline": _VALID | {"DEADLINE_EXCEEDED"},
}
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
STREAM_REVIEW_EXPECTED = frozenset({"OK", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"})
TIMEOUT_S = 60.0  # the gRPC deadline of ordinary calls
WATCHDOG_MARGIN_S = 30.0  # past the deadline, a call with no status is lost

_WORDS = (
    "the a an and of to is was it this that film movie story plot acting actor actress "
    "director scene scenes character characters script music ending great good bad awful "
    "boring brilliant wonderful terrible dull funny moving beautiful worst best loved "
    "hated enjoyed waste time watch watched again never ever really very quite too much "
    "not but so well performance cast camera dialogue twist drama comedy horror action"
).split()


def synthetic_review(rng: random.Random) -> str:
    """A review-like text of 5 to 200 common review words, varied punctuation included."""
    words = rng.choices(_WORDS, k=rng.randint(5, 200))
    text = " ".join(words)
    return text.capitalize() + rng.choice([".", "!", "...", " <br /><br />", "?!"])


def synthetic_reviews(seed: int, count: int = 2_000) -> list[str]:
    """The benches' review sample: `count` synthetic reviews, the same for the same seed."""
    rng = random.Random(seed)
    return [synthetic_review(rng) for _ in range(count)]


@dataclass
class Tally:
    """Outcomes by kind, stream reviews' outcomes, and every loss or surprise (first few kept)."""

    sent: Counter = field(default_factory=Counter)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    stream_reviews: Counter = field(default_factory=Counter)
    stream_reviews_sent: int = 0
    lost: int = 0
    unexpected: int = 0
    examples: list[str] = field(default_factory=list)

    def record(self, kind: str, code: str, detail: str = "") -> None:
        self.by_kind.setdefault(kind, Counter())[code] += 1
        if code not in EXPECTED[kind]:
            self.note_unexpected(f"{kind} ended {code} {detail}".rstrip())

    def note_lost(self, what: str) -> None:
        self.lost += 1
        self._example(f"lost: {what}")

    def note_unexpected(self, what: str) -> None:
        self.unexpected += 1
        self._example(f"unexpected: {what}")

    def _example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    @property
    def unaccounted(self) -> int:
        """Requests sent that ended neither in a recorded status nor as lost: must be 0."""
        recorded = sum(sum(c.values()) for c in self.by_kind.values())
        return sum(self.sent.values()) - recorded - self.lost

    def codes(self) -> Counter:
        total: Counter = Counter()
        for counter in self.by_kind.values():
            total.update(counter)
        return total


class Mix:
    """Builds and runs one request of a drawn kind against a channel; records its outcome."""

    def __init__(
        self,
        reviews: list[str],
        max_review_bytes: int,
        max_reviews: int,
        weights: dict[str, int] | None = None,
    ):
        self.reviews = reviews
        self.weights = dict(weights or MIX)
        self.oversize = "word " * (max_review_bytes // 5 + 1)
        self.max_reviews = max_reviews
        wire = sentiment_pb2.PredictRequest(reviews=["fine", "XX"]).SerializeToString()
        self.invalid_utf8 = wire.replace(b"XX", b"\xff\xfe")

    def draw(self, rng: random.Random) -> str:
        return rng.choices(list(self.weights), weights=list(self.weights.values()))[0]

    async def run(self, kind: str, channel: grpc.aio.Channel, rng: random.Random, tally: Tally):
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        handler: Callable = getattr(self, f"_{kind}")
        tally.sent[kind] += 1
        try:
            await asyncio.wait_for(
                handler(stub, channel, rng, tally), TIMEOUT_S + WATCHDOG_MARGIN_S
            )
        except asyncio.TimeoutError:
            tally.note_lost(f"{kind}: no status within {TIMEOUT_S + WATCHDOG_MARGIN_S:.0f} s")
        except Exception as exc:  # the harness or the library misbehaved: flag it, go on
            tally.record(kind, f"raised {type(exc).__name__}", repr(exc))

    # -- kinds -----------------------------------------------------------------------------

    async def _single(self, stub, channel, rng, tally) -> None:
        await self._predict(stub, "single", [rng.choice(self.reviews)], TIMEOUT_S, tally)

    async def _multi(self, stub, channel, rng, tally) -> None:
        reviews = rng.choices(self.reviews, k=rng.randint(2, 8))
        await self._predict(stub, "multi", reviews, TIMEOUT_S, tally)

    async def _short_deadline(self, stub, channel, rng, tally) -> None:
        reviews = rng.choices(self.reviews, k=rng.randint(1, 4))
        await self._predict(stub, "short_deadline", reviews, rng.uniform(0.001, 0.010), tally)

    async def _predict(self, stub, kind, reviews, timeout_s, tally) -> None:
        try:
            response = await stub.Predict(
                sentiment_pb2.PredictRequest(reviews=reviews), timeout=timeout_s
            )
        except grpc.RpcError as error:
            tally.record(kind, error.code().name, error.details() or "")
            return
        self._check_predictions(kind, response.predictions, len(reviews), tally)

    def _check_predictions(self, kind, predictions, expected_count, tally) -> None:
        if len(predictions) != expected_count:
            tally.note_lost(f"{kind}: {len(predictions)} predictions for {expected_count} reviews")
            return
        for p in predictions:
            if not 0.0 <= p.score <= 1.0 or p.label == sentiment_pb2.LABEL_UNSPECIFIED:
                tally.note_unexpected(f"{kind}: prediction {p}")
        tally.record(kind, "OK")

    async def _bad_input(self, stub, channel, rng, tally) -> None:
        variant = rng.choice(BAD_INPUTS)
        if variant == "invalid_utf8":
            raw = channel.unary_unary(PREDICT, request_serializer=None, response_deserializer=None)
            try:
                await raw(self.invalid_utf8, timeout=TIMEOUT_S)
            except grpc.RpcError as error:
                tally.record("bad_input", error.code().name, error.details() or "")
                return
            tally.record("bad_input", "OK")  # not expected: recorded as unexpected
            return
        bad = {
            "empty": "",
            "whitespace": " \n\t ",
            "wordless": "!!! <br /><br /> ?!",
            "oversize": self.oversize,
        }
        if variant == "too_many":
            reviews = ["a fine film"] * (self.max_reviews + 1)
        else:
            reviews = [rng.choice(self.reviews), bad[variant]]
        try:
            await stub.Predict(sentiment_pb2.PredictRequest(reviews=reviews), timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            tally.record("bad_input", error.code().name, error.details() or "")
            return
        tally.record("bad_input", "OK")

    async def _stream(self, stub, channel, rng, tally) -> None:
        reviews = rng.choices(self.reviews, k=rng.randint(5, 20))
        planted = rng.randrange(len(reviews)) if rng.random() < 0.3 else None
        if planted is not None:
            reviews[planted] = "  "  # a bad review must fail alone
        requests = [
            sentiment_pb2.StreamPredictRequest(id=str(i), review=r) for i, r in enumerate(reviews)
        ]
        tally.stream_reviews_sent += len(requests)
        answers = []
        try:
            async for answer in stub.StreamPredict(iter(requests), timeout=TIMEOUT_S):
                answers.append(answer)
        except grpc.RpcError as error:
            tally.record("stream", error.code().name, error.details() or "")
            return
        if [a.id for a in answers] != [r.id for r in requests]:
            tally.note_lost(f"stream: answered ids {[a.id for a in answers]} for {len(requests)}")
            return
        for index, answer in enumerate(answers):
            if answer.WhichOneof("result") == "prediction":
                code = "OK"
            else:
                code = _CODE_NAMES.get(answer.error.code, "UNKNOWN")
            tally.stream_reviews[code] += 1
            if code not in STREAM_REVIEW_EXPECTED or (code == "INVALID_ARGUMENT") != (
                index == planted
            ):
                tally.note_unexpected(f"stream review {index} (planted {planted}) ended {code}")
        tally.record("stream", "OK")

    async def _cancelled(self, stub, channel, rng, tally) -> None:
        if rng.random() < 0.7:
            reviews = rng.choices(self.reviews, k=rng.randint(1, 8))
            call = stub.Predict(sentiment_pb2.PredictRequest(reviews=reviews), timeout=TIMEOUT_S)
            await asyncio.sleep(rng.uniform(0, 0.02))
            call.cancel()
            try:
                response = await call
            except asyncio.CancelledError:
                tally.record("cancelled", "CANCELLED")
                return
            except grpc.RpcError as error:
                tally.record("cancelled", error.code().name, error.details() or "")
                return
            self._check_predictions("cancelled", response.predictions, len(reviews), tally)
            return
        # A stream abandoned half-way: some reviews sent, a few answers read, then gone.
        call = stub.StreamPredict(timeout=TIMEOUT_S)
        count = rng.randint(4, 20)
        try:
            for i in range(count):
                review = rng.choice(self.reviews)
                await call.write(sentiment_pb2.StreamPredictRequest(id=str(i), review=review))
            for _ in range(rng.randint(0, count // 2)):
                await call.read()
        except grpc.RpcError as error:
            call.cancel()
            tally.record("cancelled", error.code().name, error.details() or "")
            return
        call.cancel()
        tally.record("cancelled", "CANCELLED")


async def run_load(
    targets: list[str],
    mix: Mix,
    *,
    requests: int,
    concurrency: int,
    seed: int,
    max_duration_s: float,
    on_progress: Callable[[int, Tally], None] | None = None,
) -> tuple[Tally, float, bool]:
    """Runs `requests` requests with `concurrency` workers over a few channels.

    Returns the tally, the seconds it took, and whether the time bound cut it short.
    """
    tally = Tally()
    # Callers without a retry policy: default channels, on which gRPC's transparent retries
    # re-send only what a server never received (a call a connection's GOAWAY turned away).
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    next_index = 0
    done = 0
    cut_short = False
    started_s = time.monotonic()

    async def worker(number: int) -> None:
        nonlocal next_index, done, cut_short
        rng = random.Random(seed * 1_000_003 + number)
        channel = channels[number % len(channels)]
        while next_index < requests:
            if time.monotonic() - started_s > max_duration_s:
                cut_short = True
                return
            next_index += 1
            await mix.run(mix.draw(rng), channel, rng, tally)
            done += 1
            if on_progress is not None:
                on_progress(done, tally)

    try:
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    return tally, time.monotonic() - started_s, cut_short
