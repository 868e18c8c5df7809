"""Padding's cost: batches as served vs padded to their longest review vs padded to maxlen.

The server pads no batch beyond its longest review (capped at maxlen), as
TensorFlow Serving's pad_variable_length_inputs does, and further scores a
batch in groups of similar length (server/batching/length_groups.py); the seed padded
every review to maxlen. Padding is masked, so all three give the same scores:
this measures what the extra time steps cost, and checks that the scores agree.
"""

from __future__ import annotations

import numpy as np

from bench.limit import measure_batch_size


def shortest(reviews: list[str], fraction: float, at_least: int) -> list[str]:
    """The shortest `fraction` of reviews by word count (at least `at_least` of them)."""
    count = min(len(reviews), max(at_least, round(fraction * len(reviews))))
    return sorted(reviews, key=lambda review: len(review.split()))[:count]


class PaddedTo:
    """The serving model's scores with every batch padded to maxlen, or to its longest review
    in one piece (the server before it grouped batches by length). Reviews must have words."""

    def __init__(self, model, to_maxlen: bool):
        self._model = model
        self._to_maxlen = to_maxlen

    def __call__(self, reviews: list[str]) -> list[float]:
        ids = self._model.tokenize(reviews)  # [batch, <= maxlen], right-padded with 0
        if self._to_maxlen:
            padded = np.zeros((len(reviews), self._model.maxlen), dtype=np.int64)
            padded[:, : ids.shape[1]] = ids
            ids = padded
        return self._model.score(ids).tolist()


def max_score_difference(model, predict, reviews: list[str], batch_size: int) -> float:
    """The largest |as served - predict| over `reviews`, scored `batch_size` at a time."""
    largest = 0.0
    for start in range(0, len(reviews), batch_size):
        batch = reviews[start : start + batch_size]
        served = np.asarray(model.predict(batch), dtype=np.float64)
        largest = max(largest, float(np.max(np.abs(served - np.asarray(predict(batch))))))
    return largest


def measure_padding(
    model, reviews: list[str], batch_size: int, duration_s: float, fraction: float = 0.1
) -> dict:
    """On the shortest reviews: as served vs padded to the longest vs to maxlen, and the
    score check; on the whole sample: as served vs padded to the longest (grouping's effect)."""
    short = shortest(reviews, fraction, at_least=batch_size)
    lengths = np.count_nonzero(model.tokenize(short), axis=1)
    to_longest, to_maxlen = PaddedTo(model, to_maxlen=False), PaddedTo(model, to_maxlen=True)

    def measure(predict, texts):
        return measure_batch_size(predict, texts, batch_size, duration_s, min_batches=3)

    variants = {
        "as_served": measure(model.predict, short),
        "padded_to_longest": measure(to_longest, short),
        "padded_to_maxlen": measure(to_maxlen, short),
    }
    whole = {"as_served": measure(model.predict, reviews)}
    whole["padded_to_longest"] = measure(to_longest, reviews)
    differences = [
        max_score_difference(model, padded, texts, batch_size)
        for padded in (to_longest, to_maxlen)
        for texts in (short, reviews[: 4 * batch_size])
    ]
    return {
        "reviews": len(short),
        "fraction_of_sample": fraction,
        "batch_size": batch_size,
        "maxlen": model.maxlen,
        "tokens_mean": round(float(lengths.mean()), 1),
        "tokens_max": int(lengths.max()),
        **variants,
        "speedup": round(
            variants["as_served"]["reviews_per_s"] / variants["padded_to_maxlen"]["reviews_per_s"],
            2,
        ),
        "max_abs_score_diff": max(differences),
        "grouping": {
            "reviews": len(reviews),
            **whole,
            "speedup": round(
                whole["as_served"]["reviews_per_s"] / whole["padded_to_longest"]["reviews_per_s"],
                2,
            ),
        },
    }
