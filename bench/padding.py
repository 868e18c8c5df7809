"""Padding's cost on short reviews: batches padded to their own longest review vs to maxlen.

The server pads a batch only as far as its longest review (capped at maxlen),
as TensorFlow Serving's pad_variable_length_inputs does; the seed padded every
review to maxlen. Padding is masked, so both give the same scores: this
measures what the extra time steps cost, and checks that the scores agree.
"""

from __future__ import annotations

import numpy as np

from bench.limit import measure_batch_size


def shortest(reviews: list[str], fraction: float, at_least: int) -> list[str]:
    """The shortest `fraction` of reviews by word count (at least `at_least` of them)."""
    count = min(len(reviews), max(at_least, round(fraction * len(reviews))))
    return sorted(reviews, key=lambda review: len(review.split()))[:count]


class PaddedToMaxlen:
    """The serving model's predict, but every batch padded to maxlen before the LSTM."""

    def __init__(self, model):
        self._model = model

    def __call__(self, reviews: list[str]) -> list[float]:
        ids = self._model.tokenize(reviews)  # [batch, <= maxlen], right-padded with 0
        padded = np.zeros((len(reviews), self._model.maxlen), dtype=np.int64)
        padded[:, : ids.shape[1]] = ids
        return self._model.score(padded).tolist()


def max_score_difference(model, reviews: list[str], batch_size: int) -> float:
    """The largest |as served - padded to maxlen| over `reviews`, scored `batch_size` at a time."""
    padded = PaddedToMaxlen(model)
    largest = 0.0
    for start in range(0, len(reviews), batch_size):
        batch = reviews[start : start + batch_size]
        served = np.asarray(model.predict(batch), dtype=np.float64)
        largest = max(largest, float(np.max(np.abs(served - np.asarray(padded(batch))))))
    return largest


def measure_padding(
    model, reviews: list[str], batch_size: int, duration_s: float, fraction: float = 0.1
) -> dict:
    """Throughput on the shortest reviews, as served vs padded to maxlen, and the score check."""
    short = shortest(reviews, fraction, at_least=batch_size)
    lengths = np.count_nonzero(model.tokenize(short), axis=1)
    as_served = measure_batch_size(model.predict, short, batch_size, duration_s, min_batches=3)
    padded = measure_batch_size(PaddedToMaxlen(model), short, batch_size, duration_s, min_batches=3)
    return {
        "reviews": len(short),
        "fraction_of_sample": fraction,
        "batch_size": batch_size,
        "maxlen": model.maxlen,
        "tokens_mean": round(float(lengths.mean()), 1),
        "tokens_max": int(lengths.max()),
        "as_served": as_served,
        "padded_to_maxlen": padded,
        "speedup": round(as_served["reviews_per_s"] / padded["reviews_per_s"], 2),
        "max_abs_score_diff": max_score_difference(model, short, batch_size),
    }
