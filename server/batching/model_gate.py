"""One model, two kinds of work: Predict's batches go first, Explain takes the idle time.

Standard library only. Predict's batcher and the Explainer each run the model on
a worker thread of their own; the gate lets one of them in at a time, so they
never share the CPU. A batch goes in as soon as the model is free. An
explanation goes in only once no batch has run or waited, and no review has
been queued (`pending`, the batcher's queue), for `quiet_s`: longer than callers
in a loop take to send their next review and than the batcher waits to fill a
batch, so a Predict load that keeps the model busy is never interrupted, and
the most a batch can wait is one explanation that began in an idle moment
(0.1-0.2 s for a 230-word review on 2 CPU cores). Under such a load Explain
calls wait, up to their deadline.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

# Closed-loop callers are back with their next review within a few milliseconds, but on a
# busy shared machine a caller can go unscheduled for tens of milliseconds: with 50 ms,
# explanations still slipped in under 8 looping Predict callers (one round's p99 2.8x).
DEFAULT_QUIET_S = 0.2
# How often a waiting explanation looks at the batcher's queue (it sends no signal).
_PENDING_POLL_S = 0.005


class ModelGate:
    """A lock with two priorities: `first(fn)` wraps work that goes first (Predict's
    batches); `behind()` holds the gate once that work has left the model idle for quiet_s."""

    def __init__(
        self, quiet_s: float = DEFAULT_QUIET_S, pending: Callable[[], bool] | None = None
    ) -> None:
        if not 0 <= quiet_s < 60:
            raise ValueError(f"quiet_s must be in [0, 60), got {quiet_s!r}")
        self.quiet_s = quiet_s
        # Whether work that goes first is queued but not yet at the gate (the batcher's queue).
        self.pending = pending or (lambda: False)
        self._changed = threading.Condition()
        self._busy = False
        self._first_waiting = 0
        self._first_seen_at_s = -float("inf")  # time.monotonic() when a batch last ran or waited

    def first(self, work: Callable[[T], object]) -> Callable[[T], object]:
        """`work` wrapped to run inside the gate, ahead of anything waiting behind()."""

        def gated(arg: T) -> object:
            with self._changed:
                self._first_waiting += 1
                try:
                    while self._busy:
                        self._changed.wait()
                finally:
                    self._first_waiting -= 1
                self._busy = True
            try:
                return work(arg)
            finally:
                with self._changed:
                    self._busy = False
                    self._first_seen_at_s = time.monotonic()
                    self._changed.notify_all()

        return gated

    @contextlib.contextmanager
    def behind(self) -> Iterator[None]:
        """Holds the gate once nothing that goes first has run or waited for quiet_s."""
        with self._changed:
            while True:
                if self._busy or self._first_waiting:
                    self._changed.wait()
                    continue
                if self.pending():
                    self._first_seen_at_s = time.monotonic()
                    self._changed.wait(_PENDING_POLL_S)
                    continue
                idle_s = time.monotonic() - self._first_seen_at_s
                if idle_s >= self.quiet_s:
                    break
                self._changed.wait(min(self.quiet_s - idle_s, _PENDING_POLL_S))
            self._busy = True
        try:
            yield
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
