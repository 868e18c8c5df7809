"""Load generator for the sentiment service, in the spirit of ghz: run_bench(BenchConfig) -> dict.

    from imdb_sentiment_client.bench import BenchConfig, run_bench
    result = run_bench(BenchConfig("localhost:50051", mode="stream", concurrency=16, procs=2))
    print(result["reviews_per_s"], result["latency_ms"]["p99"])

Several processes (`procs`) each run grpc.aio with their share of `concurrency`, so
one Python process is not what limits the measurement. Every run is bounded in
time (`duration_s`, or `max_duration_s` when counting `requests`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import multiprocessing
import queue
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from imdb_sentiment_client.config import ClientConfig, TlsConfig, positive
from imdb_sentiment_client.errors import UnavailableError, status_code
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc

MODES = ("unary", "multi", "stream")
# Stand-ins when no --input is given; real reviews (--input) give realistic lengths.
SAMPLE_REVIEWS = (
    "A moving, beautifully acted film. I loved every minute of it.",
    "Two hours I will never get back. The plot was dull and the acting wooden.",
    "Not perfect, but the performances are superb and the ending is brilliant.",
    "Boring, predictable and far too long. Avoid.",
    "One of the best films of the decade: funny, sharp and full of heart.",
    "The script is a mess and the director seems to have given up halfway through.",
)
# How long processes may take to start and connect before the run begins.
_STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. `requests` counts RPCs (stream mode: reviews), across all procs.

    With neither `duration_s` nor `requests` the run lasts 10 s; with `requests`
    alone it still stops after `max_duration_s`. In stream mode each of the
    `concurrency` streams keeps `stream_window` reviews in flight. Retries are
    off: the bench reports failures, it does not hide them.
    """

    target: str
    mode: str = "unary"
    concurrency: int = 8
    duration_s: float | None = None
    requests: int | None = None
    reviews_per_request: int = 16
    stream_window: int = 16
    procs: int = 1
    input_path: str | None = None
    timeout_s: float = 10.0
    max_duration_s: float = 600.0
    tls: TlsConfig | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("concurrency", "reviews_per_request", "stream_window", "procs"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.procs > self.concurrency:
            raise ValueError(
                f"procs ({self.procs}) must not exceed concurrency ({self.concurrency})"
            )
        if self.requests is not None and not (isinstance(self.requests, int) and self.requests > 0):
            raise ValueError(f"requests must be a positive integer, got {self.requests!r}")
        if self.duration_s is not None:
            positive("duration_s", self.duration_s)
        positive("timeout_s", self.timeout_s)
        positive("max_duration_s", self.max_duration_s)
        # Checks target, TLS and token the way the client would.
        self.client_config()

    @property
    def run_s(self) -> float:
        """How long the run may last."""
        if self.duration_s is not None:
            return min(self.duration_s, self.max_duration_s)
        return 10.0 if self.requests is None else self.max_duration_s

    def client_config(self) -> ClientConfig:
        return ClientConfig(
            self.target, timeout_s=self.timeout_s, retry=None, tls=self.tls, token=self.token
        )


def run_bench(config: BenchConfig) -> dict:
    """Runs the benchmark and returns its result (see _merge for the keys).

    Raises UnavailableError when a process cannot connect to the target.
    """
    reviews = load_reviews(config.input_path)  # fail on a bad --input before starting anything
    shares = _split(config.concurrency, config.procs)
    budgets = _split(config.requests, config.procs) if config.requests else [None] * config.procs
    if config.procs == 1:
        parts = [asyncio.run(_run_process(config, shares[0], budgets[0], reviews))]
    else:
        parts = _run_processes(config, shares, budgets)
    return _merge(config, parts)


def load_reviews(path: str | None) -> list[str]:
    """Non-blank lines of the input file, or the built-in samples."""
    if path is None:
        return list(SAMPLE_REVIEWS)
    reviews = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    reviews = [review for review in reviews if review]
    if not reviews:
        raise ValueError(f"{path} holds no reviews (one per line)")
    return reviews


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _run_processes(config: BenchConfig, shares: list[int], budgets: list) -> list[dict]:
    # spawn, not fork: a forked child would inherit the parent's gRPC state.
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(
            target=_process_main,
            args=(config, share, budget, ready, go, results),
            name=f"sentiment-bench-{index}",
            daemon=True,
        )
        for index, (share, budget) in enumerate(zip(shares, budgets, strict=True))
    ]
    for process in processes:
        process.start()
    try:
        started_by = time.monotonic() + _STARTUP_TIMEOUT_S
        for _ in processes:
            _get(ready, processes, started_by)
        go.set()  # every process has connected: start together so their windows overlap
        finished_by = time.monotonic() + config.run_s + config.timeout_s + _STARTUP_TIMEOUT_S
        parts = [_get(results, processes, finished_by) for _ in processes]
        for part in parts:
            if "unavailable" in part:
                raise UnavailableError(grpc.StatusCode.UNAVAILABLE, part["unavailable"])
        return parts
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()


def _get(source: multiprocessing.Queue, processes: list, deadline: float):
    """The next message from the processes; fails fast if one of them died instead."""
    while True:
        try:
            return source.get(timeout=0.5)
        except queue.Empty:
            pass
        crashed = [p.name for p in processes if p.exitcode not in (None, 0)]
        if crashed:
            raise RuntimeError(f"benchmark process {crashed[0]} failed; see its traceback above")
        if time.monotonic() > deadline:
            raise TimeoutError("a benchmark process did not start or finish in time")


def _process_main(config, share, budget, ready, go, results) -> None:
    reviews = load_reviews(config.input_path)
    results.put(asyncio.run(_run_process(config, share, budget, reviews, ready, go)))


async def _run_process(
    config: BenchConfig,
    concurrency: int,
    budget: int | None,
    reviews: list[str],
    ready=None,
    go=None,
) -> dict:
    """One process's share of the run, on one channel; returns its raw counts and latencies."""
    channel = config.client_config().open_channel(grpc.aio)
    async with channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), config.timeout_s)
        except asyncio.TimeoutError:
            message = f"could not connect to {config.target} within {config.timeout_s:g}s"
            if ready is None:
                raise UnavailableError(grpc.StatusCode.UNAVAILABLE, message) from None
            ready.put(False)
            return {"unavailable": message}
        if ready is not None:
            ready.put(True)
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
        load = _Load(config, sentiment_pb2_grpc.SentimentServiceStub(channel), budget, reviews)
        started = time.perf_counter()
        await asyncio.gather(*(load.worker(index) for index in range(concurrency)))
        return load.summary(time.perf_counter() - started)


class _Load:
    """The workers of one process and what they measured."""

    def __init__(self, config: BenchConfig, stub, budget: int | None, reviews: list[str]) -> None:
        self.config = config
        self.stub = stub
        self.metadata = config.client_config().metadata()
        self.budget = budget  # RPCs (stream: reviews) this process may still start
        self.reviews = reviews
        self.stop_at = time.monotonic() + config.run_s
        self.latencies_s: list[float] = []
        self.rpcs = 0
        self.reviews_done = 0
        self.errors: Counter[str] = Counter()

    def finished(self) -> bool:
        return self.budget == 0 or time.monotonic() >= self.stop_at

    def take(self) -> bool:
        """Claims the next request, or False once the count or the time is used up."""
        if self.finished():
            return False
        if self.budget is not None:
            self.budget -= 1
        return True

    async def worker(self, index: int) -> None:
        # Workers start at different reviews, so concurrent requests differ.
        texts = itertools.cycle(self.reviews[index % len(self.reviews) :] + self.reviews)
        if self.config.mode == "stream":
            while not self.finished():
                await self._stream(texts)
        else:
            size = 1 if self.config.mode == "unary" else self.config.reviews_per_request
            while self.take():
                await self._predict([next(texts) for _ in range(size)])

    async def _predict(self, batch: list[str]) -> None:
        started = time.perf_counter()
        try:
            await self.stub.Predict(
                sentiment_pb2.PredictRequest(reviews=batch),
                timeout=self.config.timeout_s,
                metadata=self.metadata,
            )
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
            return
        self.latencies_s.append(time.perf_counter() - started)
        self.rpcs += 1
        self.reviews_done += len(batch)

    async def _stream(self, texts: Iterator[str]) -> None:
        """One stream, kept `stream_window` reviews deep until the run ends or it fails."""
        call = self.stub.StreamPredict(
            timeout=max(0.1, self.stop_at - time.monotonic()) + self.config.timeout_s,
            metadata=self.metadata,
        )
        sent_at: dict[str, float] = {}
        window = asyncio.Semaphore(self.config.stream_window)

        async def write() -> None:
            for seq in itertools.count():
                await window.acquire()
                if not self.take():
                    break
                sent_at[str(seq)] = time.perf_counter()
                request = sentiment_pb2.StreamPredictRequest(id=str(seq), review=next(texts))
                await call.write(request)
            await call.done_writing()

        writer = asyncio.ensure_future(write())
        try:
            async for response in call:
                latency_s = time.perf_counter() - sent_at.pop(response.id)
                window.release()
                if response.WhichOneof("result") == "error":
                    self.errors[status_code(response.error.code).name] += 1
                    continue
                self.latencies_s.append(latency_s)
                self.rpcs += 1
                self.reviews_done += 1
            await writer
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "CANCELLED"
            self.errors[code] += 1 + len(sent_at)  # the stream and the reviews it lost
            await asyncio.sleep(0.05)  # a failing server is not hammered in a tight loop
        finally:
            writer.cancel()
            call.cancel()

    def summary(self, elapsed_s: float) -> dict:
        return {
            "elapsed_s": elapsed_s,
            "rpcs": self.rpcs,
            "reviews": self.reviews_done,
            "errors": dict(self.errors),
            "latencies_s": self.latencies_s,
        }


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _merge(config: BenchConfig, parts: list[dict]) -> dict:
    """The run's result: settings, counts, rates, latency percentiles, errors by status code."""
    elapsed_s = max(part["elapsed_s"] for part in parts)
    latencies_ms = sorted(s * 1000.0 for part in parts for s in part["latencies_s"])
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part["errors"])
    rpcs = sum(part["rpcs"] for part in parts)
    reviews = sum(part["reviews"] for part in parts)
    settings = dataclasses.asdict(config)
    settings.pop("token")  # a secret has no place in a report
    return {
        "config": settings,
        "elapsed_s": round(elapsed_s, 4),
        "rpcs": rpcs,
        "reviews": reviews,
        "rpc_per_s": round(rpcs / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        "reviews_per_s": round(reviews / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        "latency_ms": {
            name: round(percentile(latencies_ms, fraction), 3)
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
    }
