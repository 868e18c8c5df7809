"""A stand-in for ServingModel that stays busy until released, for tests of the server's
queueing that need no real scores (the real model held busy is model_spies.GatedModel)."""

from __future__ import annotations

import threading


class HeldModel:
    """ServingModel's attributes with a predict that waits until released: a busy model."""

    name, version, maxlen, vocabulary_size = "held", 7, 40, 100
    decision_threshold, metrics, preset = 0.5, {}, "fake"

    def __init__(self):
        self.release = threading.Event()
        self.calls: list[list[str]] = []

    def predict(self, reviews: list[str]) -> list[float]:
        self.calls.append(list(reviews))
        self.release.wait(30)
        return [0.75] * len(reviews)
