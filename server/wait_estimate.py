"""How long the reviews queued now will take to score: an estimate from the batches just run.

Standard library only. The batcher asks it at every admission whether a request's
reviews would be scored before the caller's deadline, so it is O(1), and it
follows the model within a few batches when it slows down or speeds up again:

- a review costs what one cost in the recent batches: the ratio of exponentially
  weighted means of the last few batches' times and sizes. A batch smaller than
  an eighth of max_batch_size counts as that size: its time is mostly fixed cost,
  and any stall of a busy machine, and taken per review it would make a full
  batch look many times slower than it is. Taking a larger batch as costing the
  same per review errs on the slow side, which is the side to err on while a
  slowed model's batches grow;
- the reviews ahead of a request run as full batches, and the batch that carries
  it also carries what arrives before that batch starts, at the recent rate of
  arrivals (refused ones too: whatever joins that batch later makes it slower,
  and the reviews admitted into it earlier must still be in time). Under a
  backlog that is a full batch, however few reviews are queued when it arrives;
- the batch running now has what its size costs, less what it has run, left
  (never less than nothing); and once it has run longer than that, the model has
  slowed down before any slow batch has ended: a review then costs at least what
  this batch has cost per review so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The newest batch's weight: after a 10x change, 4 batches bring the estimate within 1.6x.
SMOOTHING = 0.5
# Batches under max_batch_size / this many reviews count as costing what one of that size does.
SMALL_BATCH_DIVISOR = 8
# The arrival rate is a count of reviews that decays with this time constant.
RATE_WINDOW_S = 1.0


@dataclass
class WaitEstimate:
    """The recent batches' time and size, and the wait that makes for queued reviews."""

    max_batch_size: int
    batch_s: float | None = None  # None until a batch has run: no estimate, nothing refused
    batch_size: float = 0.0
    arrivals_per_s: float = 0.0
    _arrived_at_s: float = -math.inf

    def arrived(self, reviews: int, now_s: float) -> None:
        """A request of `reviews` reviews came to be queued at `now_s` (time.monotonic())."""
        decay = math.exp(min(0.0, self._arrived_at_s - now_s) / RATE_WINDOW_S)
        self.arrivals_per_s = self.arrivals_per_s * decay + reviews / RATE_WINDOW_S
        self._arrived_at_s = now_s

    def observe(self, size: int, seconds: float) -> None:
        """A batch of `size` reviews finished after `seconds` in the model."""
        if self.batch_s is None:
            self.batch_s, self.batch_size = seconds, float(size)
        else:
            self.batch_s += SMOOTHING * (seconds - self.batch_s)
            self.batch_size += SMOOTHING * (size - self.batch_size)

    def wait_s(
        self, reviews: int, running_size: int = 0, running_for_s: float | None = None
    ) -> float | None:
        """Seconds until the last of `reviews` queued reviews is scored, behind the batch of
        `running_size` reviews that has been in the model for `running_for_s` (None: the
        model is idle); None while there is no estimate."""
        if self.batch_s is None:
            return None
        # A small batch's time is mostly fixed cost, and any stall of the machine: taken
        # per review, it would make every larger batch far too slow.
        floor = max(1, self.max_batch_size // SMALL_BATCH_DIVISOR)
        review_s = self.batch_s / max(self.batch_size, floor)
        left_s = 0.0
        if running_for_s is not None:
            review_s = max(review_s, running_for_s / max(running_size, floor))
            left_s = max(0.0, max(running_size, floor) * review_s - running_for_s)
        if reviews <= 0:
            return left_s
        batches = math.ceil(reviews / self.max_batch_size)
        starts_s = left_s + (batches - 1) * self.max_batch_size * review_s
        last = reviews - (batches - 1) * self.max_batch_size
        last = min(self.max_batch_size, last + self.arrivals_per_s * starts_s)
        return starts_s + last * review_s
