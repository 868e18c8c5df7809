"""The in-process limit: throughput of the serving function, ServingModel.predict, by batch size.

No gRPC, no queue: batches of real reviews go straight into the function the
server's batcher calls, one after another on this thread, as the server's one
inference thread does. What the server reaches is judged against this.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence

from imdb_sentiment_client.bench import percentile

PredictFn = Callable[[list[str]], Sequence[object]]


def batch_sizes_up_to(largest: int) -> list[int]:
    """1, 2, 4, ... and `largest` itself: 1..max_batch_size on a doubling scale."""
    sizes = list(itertools.takewhile(lambda n: n < largest, (2**k for k in itertools.count())))
    return sizes + [largest]


def measure_batch_size(
    predict: PredictFn, reviews: list[str], batch_size: int, duration_s: float, min_batches: int
) -> dict:
    """Calls `predict` on consecutive batches of `reviews` for at least `duration_s` and
    `min_batches`; returns reviews/s, the process's CPU time per review and the per-call
    latency percentiles."""
    texts = itertools.cycle(reviews)
    predict([next(texts) for _ in range(batch_size)])  # the first call at a new size is slower
    latencies_s: list[float] = []
    started_s, started_cpu_s = time.perf_counter(), time.process_time()
    while len(latencies_s) < min_batches or time.perf_counter() - started_s < duration_s:
        batch = [next(texts) for _ in range(batch_size)]
        call_started_s = time.perf_counter()
        predict(batch)
        latencies_s.append(time.perf_counter() - call_started_s)
    # Every thread of this process (TensorFlow's and the fast path's lanes too).
    cpu_s = time.process_time() - started_cpu_s
    busy_s = sum(latencies_s)
    latencies_ms = sorted(1000 * s for s in latencies_s)
    return {
        "batch_size": batch_size,
        "batches": len(latencies_s),
        "reviews_per_s": round(batch_size * len(latencies_s) / busy_s, 2),
        "cpu_us_per_review": round(1e6 * cpu_s / (batch_size * len(latencies_s)), 1),
        "latency_ms": {
            name: round(percentile(latencies_ms, fraction), 3)
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
    }


def measure_limit(
    predict: PredictFn,
    reviews: list[str],
    batch_sizes: Iterable[int],
    duration_s: float,
    rounds: int = 1,
    min_batches: int = 3,
) -> list[dict]:
    """Per batch size (in the order given) the fastest of `rounds` measurements.

    The limit is what the machine can do: a round slowed by other work on a
    shared machine understates it, so the sizes are swept `rounds` times, up
    and down in turn, and the faster round of each size counts.
    """
    sizes = list(batch_sizes)
    fastest: dict[int, dict] = {}
    for round_index in range(rounds):
        for size in sizes if round_index % 2 == 0 else reversed(sizes):
            point = measure_batch_size(predict, reviews, size, duration_s, min_batches)
            if size not in fastest or point["reviews_per_s"] > fastest[size]["reviews_per_s"]:
                fastest[size] = point
    return [{**fastest[size], "rounds": rounds} for size in sizes]


def best(points: list[dict], max_batch_size: int) -> dict:
    """The fastest point among batch sizes up to `max_batch_size`."""
    eligible = [p for p in points if p["batch_size"] <= max_batch_size]
    if not eligible:
        raise ValueError(f"no limit was measured at a batch size <= {max_batch_size}")
    return max(eligible, key=lambda p: p["reviews_per_s"])
