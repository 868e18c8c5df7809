"""Scoring paths side by side in-process: the fast path against the plain Keras float32 path.

Each path is a `ServingModel.predict` (tokenising included) on the same batches
of real reviews. Batch sizes are swept in rounds and, within a round, the paths
take turns at each size (the order rotating), so a change in the machine's load
hits every path alike; a ratio is taken within each round, and the report gives
the median and the spread over the rounds. Also: batch-1 latency of each path
over the same reviews, alternating review by review, and the largest score
difference and test accuracy of each path over the test reviews.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from bench.limit import measure_batch_size

PredictFn = Callable[[list[str]], list]


def sweep(
    paths: dict[str, PredictFn],
    reviews: list[str],
    batch_sizes: list[int],
    duration_s: float,
    rounds: int,
) -> dict[str, list[dict]]:
    """Per path, per batch size: reviews/s of each round, the median, min and max."""
    names = list(paths)
    measured: dict[str, dict[int, list[dict]]] = {n: {b: [] for b in batch_sizes} for n in names}
    for round_index in range(rounds):
        sizes = batch_sizes if round_index % 2 == 0 else batch_sizes[::-1]
        for size in sizes:
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                point = measure_batch_size(paths[name], reviews, size, duration_s, min_batches=3)
                measured[name][size].append(point)
    return {name: [_summary(size, measured[name][size]) for size in batch_sizes] for name in names}


def _summary(batch_size: int, points: list[dict]) -> dict:
    rates = [p["reviews_per_s"] for p in points]
    return {
        "batch_size": batch_size,
        "rounds": len(points),
        "batches": sum(p["batches"] for p in points),
        "reviews_per_s_by_round": rates,
        "reviews_per_s": round(statistics.median(rates), 2),
        "reviews_per_s_min": min(rates),
        "reviews_per_s_max": max(rates),
        "cpu_us_per_review": round(statistics.median(p["cpu_us_per_review"] for p in points), 1),
        "latency_ms": {
            key: round(statistics.median(p["latency_ms"][key] for p in points), 3)
            for key in ("p50", "p99")
        },
    }


def ratio_by_round(numerator: dict, denominator: dict) -> dict:
    """numerator / denominator of two sweep points, round by round: median, min, max."""
    ratios = [
        a / b
        for a, b in zip(
            numerator["reviews_per_s_by_round"], denominator["reviews_per_s_by_round"], strict=True
        )
        if b > 0
    ]
    return {
        "median": round(statistics.median(ratios), 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
    }


def best_up_to(points: list[dict], max_batch_size: int) -> dict:
    eligible = [p for p in points if p["batch_size"] <= max_batch_size]
    return max(eligible, key=lambda p: p["reviews_per_s"])


def batch_1_latency(paths: dict[str, PredictFn], reviews: list[str]) -> dict[str, dict]:
    """One call per review for each path, the paths alternating review by review (so both
    see the same moments of the machine): p50, p90, p99 ms per path."""
    times_ms: dict[str, list[float]] = {name: [] for name in paths}
    for index, review in enumerate(reviews):
        names = list(paths) if index % 2 == 0 else list(paths)[::-1]
        for name in names:
            started_s = time.perf_counter()
            paths[name]([review])
            times_ms[name].append(1000 * (time.perf_counter() - started_s))
    return {
        name: {
            "reviews": len(values),
            **{
                key: round(float(np.percentile(values, q)), 3)
                for key, q in (("p50", 50), ("p90", 90), ("p99", 99))
            },
        }
        for name, values in times_ms.items()
    }


def agreement(
    fast_model, keras_model, texts: list[str], labels: list[int], batch_size: int = 128
) -> dict:
    """Scores every review by both paths: the largest |fast - keras| and each path's accuracy
    at the model's decision threshold."""
    largest = 0.0
    fast_scores, keras_scores = [], []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        fast = np.asarray(fast_model.predict(batch), dtype=object)
        plain = np.asarray(keras_model.predict(batch), dtype=object)
        scored = np.array([isinstance(v, float) for v in fast])
        if not np.array_equal(scored, [isinstance(v, float) for v in plain]):
            raise AssertionError("the two paths refused different reviews")
        a, b = fast[scored].astype(np.float64), plain[scored].astype(np.float64)
        if a.size:
            largest = max(largest, float(np.max(np.abs(a - b))))
        fast_scores += [float(v) if isinstance(v, float) else 0.5 for v in fast]
        keras_scores += [float(v) if isinstance(v, float) else 0.5 for v in plain]
    threshold = fast_model.decision_threshold
    truth = np.asarray(labels)

    def accuracy(scores: list[float]) -> float:
        return float(np.mean((np.asarray(scores) >= threshold) == (truth == 1)))

    return {
        "reviews": len(texts),
        "max_abs_score_diff": largest,
        "accuracy_fast": round(accuracy(fast_scores), 5),
        "accuracy_keras": round(accuracy(keras_scores), 5),
        "decision_threshold": threshold,
    }
