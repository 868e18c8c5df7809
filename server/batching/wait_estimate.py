"""How long the reviews queued now will take to score: an estimate from the batches just run.

Standard library only. The batcher asks it at every admission whether a request's
reviews would be scored before the caller's deadline, so it is O(1), and it
follows the model within a few batches when it slows down or speeds up again:

- a review costs what one cost in the recent batches: the median of the last
  four batches' time per review (of two middle values the smaller), so one batch
  stalled by a busy machine moves nothing, while a slowdown shows from its second
  or third batch on, and its end as soon. A batch smaller than an eighth of
  max_batch_size counts as that size: its time is mostly fixed cost, and taken
  per review it would make a full batch look many times slower than it is.
  Taking a larger batch as costing the same per review errs on the slow side,
  which is the side to err on while a slowed model's batches grow;
- the reviews ahead of a request run as full batches, and the batch that carries
  it also carries what arrives before that batch starts, at the recent rate of
  arrivals (refused ones too: whatever joins that batch later makes it slower,
  and the reviews admitted into it earlier must still be in time). Under a
  backlog that is a full batch, however few reviews are queued when it arrives;
- the batch running now has what its size costs, less what it has run, left
  (never less than nothing); once it has run longer than that, its cost so far
  counts as one more batch's in the median, so a slowdown can show before its
  second slow batch has ended.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

# The estimate is the median of this many batches' costs: one stalled batch does not move it,
# a slowdown does from its second or third batch on, and so does the end of one.
RECENT_BATCHES = 4
# Batches under max_batch_size / this many reviews count as costing what one of that size does.
SMALL_BATCH_DIVISOR = 8
# The arrival rate is a count of reviews that decays with this time constant.
RATE_WINDOW_S = 1.0


@dataclass
class WaitEstimate:
    """What a review costs in the recent batches, and the wait that makes for queued reviews."""

    max_batch_size: int
    arrivals_per_s: float = 0.0
    _arrived_at_s: float = -math.inf
    # Seconds per review of each of the last few batches; none yet: no estimate, nothing refused.
    _review_costs_s: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_BATCHES))

    def arrived(self, reviews: int, now_s: float) -> None:
        """A request of `reviews` reviews came to be queued at `now_s` (time.monotonic())."""
        decay = math.exp(min(0.0, self._arrived_at_s - now_s) / RATE_WINDOW_S)
        self.arrivals_per_s = self.arrivals_per_s * decay + reviews / RATE_WINDOW_S
        self._arrived_at_s = now_s

    def observe(self, size: int, seconds: float) -> None:
        """A batch of `size` reviews finished after `seconds` in the model."""
        self._review_costs_s.append(seconds / self._counted(size))

    @property
    def review_s(self) -> float | None:
        """What a review costs now by the batches that have ended; None before the first."""
        return _lower_median(self._review_costs_s) if self._review_costs_s else None

    def wait_s(
        self, reviews: int, running_size: int = 0, running_for_s: float | None = None
    ) -> float | None:
        """Seconds until the last of `reviews` queued reviews is scored, behind the batch of
        `running_size` reviews that has been in the model for `running_for_s` (None: the
        model is idle); None while there is no estimate."""
        review_s = self.review_s
        if review_s is None:
            return None
        left_s = 0.0
        if running_for_s is not None:
            running_s = running_for_s / self._counted(running_size)  # its cost so far, at least
            if running_s > review_s:
                review_s = _lower_median([*self._review_costs_s, running_s])
            left_s = max(0.0, self._counted(running_size) * review_s - running_for_s)
        if reviews <= 0:
            return left_s
        batches = math.ceil(reviews / self.max_batch_size)
        starts_s = left_s + (batches - 1) * self.max_batch_size * review_s
        last = reviews - (batches - 1) * self.max_batch_size
        last = min(self.max_batch_size, last + self.arrivals_per_s * starts_s)
        return starts_s + last * review_s

    def _counted(self, size: int) -> int:
        """A batch's size as its cost counts it: no less than an eighth of a full batch."""
        return max(size, self.max_batch_size // SMALL_BATCH_DIVISOR, 1)


def _lower_median(values) -> float:
    """The median, or of two middle values the smaller: estimates err low."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]
