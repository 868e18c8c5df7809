"""The real serving model, wrapped to record what reaches it or to hold it busy: spies, not fakes.

Pass one to `start_server(model=...)`. Everything but `predict` is the real
model's, so the server describes and scores exactly as it would in production.
"""

from __future__ import annotations

import threading


class CountingModel:
    """Scores with the real model and records every batch it was asked to score."""

    def __init__(self, model):
        self._model = model
        self._lock = threading.Lock()
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def predict(self, reviews: list[str]) -> list:
        with self._lock:
            self.calls.append(list(reviews))
        return self._model.predict(reviews)

    @property
    def reviews_scored(self) -> list[str]:
        """Every review that reached the model, in the order the batches ran."""
        with self._lock:
            return [review for batch in self.calls for review in batch]


class GatedModel(CountingModel):
    """The real model, but each batch first waits for `release`: a model busy for as long as
    a test needs, so that work piles up in the queue deterministically."""

    def __init__(self, model, wait_s: float = 60.0):
        super().__init__(model)
        self.release = threading.Event()
        self._wait_s = wait_s

    def predict(self, reviews: list[str]) -> list:
        with self._lock:
            self.calls.append(list(reviews))
        self.release.wait(self._wait_s)
        return self._model.predict(reviews)
