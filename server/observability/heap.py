"""Python's cycle collector and the long-lived heap: freeze what start-up built.

A loaded model brings some 400,000 Python objects (TensorFlow, Keras and their
modules), and every full collection of Python's cycle collector walks all of
them: 250-440 ms measured here, during which the event loop answers nobody,
not even a call that will be refused in half a millisecond. Under load a full
collection comes whenever enough objects outlive the younger generations, for
instance while a slowed model keeps calls in flight.

Freezing (gc.freeze) moves every object alive at that moment to a permanent
generation the collector skips, so a full collection then walks only what
serving made since; afterwards it takes microseconds. Frozen objects are still
freed by reference counting; only cycles among them are never collected. So a
model swap thaws the heap, and the next freeze (a poll later, when no batch
still holds the old version) collects the old version's cycles first.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time

logger = logging.getLogger("server.heap")


def freeze() -> None:
    """Collects once, then moves every object alive now out of the collector's way."""
    started_s = time.perf_counter()
    gc.collect()
    gc.freeze()
    logger.info(
        "froze %d long-lived Python objects (the collection before took %.0f ms)",
        gc.get_freeze_count(),
        (time.perf_counter() - started_s) * 1000,
    )


def thaw() -> bool:
    """Gives the frozen objects back to the collector; True if there were any."""
    frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    return frozen


class CollectionTimer:
    """Times each pass of the cycle collector, by generation, from `start()` to `stop()`.

    The callback runs inside the collector, so it only adds to plain numbers (no lock:
    the collection that called it may have interrupted a thread holding one)."""

    def __init__(self):
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest_s = [0.0, 0.0, 0.0]
        self._started_s = 0.0

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        # A collection holds the GIL from start to stop, so no two interleave.
        if phase == "start":
            self._started_s = time.perf_counter()
            return
        took_s = time.perf_counter() - self._started_s
        generation = info["generation"]
        self.count[generation] += 1
        self.seconds[generation] += took_s
        self.longest_s[generation] = max(self.longest_s[generation], took_s)
