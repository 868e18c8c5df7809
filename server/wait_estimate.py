"""How long the reviews queued now will take to score: an estimate from the batches just run.

Standard library only. The batcher asks it at every admission whether a request's
reviews would be scored before the caller's deadline, so it must be O(1), adapt
within a few batches when the model slows down or speeds up, and err low: an
estimate that is too low admits work that then expires (what happened before
there was any estimate), one that is too high refuses work that would have been
in time, which is worse. Hence:

- a batch's time is an exponentially weighted mean of the last few batches' times,
  whatever their size. Under a backlog every batch is full, so that is the time of
  a full batch; under light load batches are small, and their time is a low
  estimate for the full batches that a sudden backlog would run;
- the work ahead of a request runs as ceil(reviews / max_batch_size) batches;
- the batch running now is expected to take one batch's time, and to have
  `batch_s - running_for_s` left, never less than nothing;
- the model's slowdown shows before the first slow batch ends: a batch that has
  run longer than the mean says that the batches after it, when they are no
  smaller, take at least as long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The newest batch's weight: after a 10x change, 4 batches bring the estimate within 1.6x.
SMOOTHING = 0.5


@dataclass
class WaitEstimate:
    """Seconds per batch from the recent batches, and the wait that makes for queued reviews."""

    max_batch_size: int
    batch_s: float | None = None  # None until a batch has run: no estimate, nothing refused

    def observe(self, batch_s: float) -> None:
        """One batch finished after `batch_s` seconds in the model."""
        if self.batch_s is None:
            self.batch_s = batch_s
        else:
            self.batch_s += SMOOTHING * (batch_s - self.batch_s)

    def wait_s(
        self, reviews: int, running_size: int = 0, running_for_s: float | None = None
    ) -> float | None:
        """Seconds until the last of `reviews` queued reviews is scored, behind the batch of
        `running_size` reviews that has been in the model for `running_for_s` (None: the
        model is idle); None while there is no estimate."""
        if self.batch_s is None:
            return None
        batch_s, left_s = self.batch_s, 0.0
        if running_for_s is not None:
            left_s = max(0.0, batch_s - running_for_s)
            if reviews >= running_size:  # the batches after it are no smaller
                batch_s = max(batch_s, running_for_s)
        return left_s + math.ceil(reviews / self.max_batch_size) * batch_s
