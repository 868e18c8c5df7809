"""A one-line progress report for long runs: items done, rate and time left, on a terminal only.

    with Progress("reviews", total=25_000) as progress:   # writes to stderr if it is a tty
        for batch in batches:
            ...
            progress.advance(len(batch))

The line is redrawn in place at most every `min_interval_s` and ends with a summary; when the
stream is not a terminal (a pipe, a file, a CI log) nothing at all is written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03`."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class Progress:
    """Counts work done and shows it as `what: 1,200/25,000 (5%), 810/s, 0:29 left`.

    `total` None means unknown (stdin): the line then has no percentage or time left.
    `enabled` None means "if `stream` is a terminal"; a phase with nothing to count (a model
    fit) just shows `what ...` and then `what: done in 0:41`.
    """

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self._stream = sys.stderr if stream is None else stream
        self.enabled = is_terminal(self._stream) if enabled is None else enabled
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._started = clock()
        self._shown_at = float("-inf")
        self._width = 0

    def __enter__(self) -> Progress:
        if self.enabled:
            self._show(f"{self.what} ...")
        return self

    def __exit__(self, exc_type: type | None, *exc_info: object) -> None:
        self.close(finished=exc_type is None)

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self._clock()
        if self.enabled and now - self._shown_at >= self._min_interval_s:
            self._shown_at = now
            self._show(self.line(now))

    def line(self, now: float) -> str:
        """The report after `now - start` seconds."""
        parts = [self._count()]
        elapsed_s = now - self._started
        if self.done and elapsed_s > 0:
            rate = self.done / elapsed_s
            parts.append(f"{rate:,.0f}/s")
            if self.total and self.done < self.total:
                parts.append(f"{format_duration((self.total - self.done) / rate)} left")
        return ", ".join(parts)

    def close(self, finished: bool = True) -> None:
        """Writes the summary and ends the line, so what follows starts on its own line."""
        if not self.enabled:
            return
        self.enabled = False  # once
        now = self._clock()
        elapsed = format_duration(now - self._started)
        if not finished:
            summary = f"{self._count()}, stopped after {elapsed}"
        elif self.done:
            rate = self.done / max(now - self._started, 1e-3)
            summary = f"{self._count()} in {elapsed}, {rate:,.0f}/s"
        else:
            summary = f"{self.what}: done in {elapsed}"
        self._show(summary)
        self._stream.write("\n")
        self._stream.flush()

    def _count(self) -> str:
        count = f"{self.what}: {self.done:,}"
        if self.total:
            count += f"/{self.total:,} ({100 * self.done / self.total:.0f}%)"
        return count

    def _show(self, text: str) -> None:
        # Pad over what the previous, longer line left on the screen.
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write(f"\r{text}{padding}")
        self._stream.flush()
