"""The installed `sentiment-server` command in a subprocess: start it, read its log as it runs,
find its port, signal it and collect its exit status."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SERVING_LINE = re.compile(r"serving on 127\.0\.0\.1:(\d+)")
# The server's own log lines (text format) and argparse-style setting errors; TensorFlow's
# C++ lines ("I0000 ...", "E0000 ...") and absl's banner are not the server's to word.
_OWN_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) |^sentiment-server: "
)


def installed_command() -> list[str]:
    """`sentiment-server` as `pip install` put it beside this interpreter."""
    command = shutil.which("sentiment-server", path=str(Path(sys.executable).parent))
    return [command] if command else [sys.executable, "-m", "server.main"]


class ServerSubprocess:
    """`with ServerSubprocess("--port", "0", ...) as server:`; killed on exit if still running."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen(
            installed_command() + list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: __exit__ ends every child too
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> ServerSubprocess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """SIGKILL to the command and anything it started that is still running (children
        end with their supervisor by themselves; this is a test run's guard, not that)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.put(line.rstrip("\n"))

    def _drain_lines(self) -> None:
        while True:
            try:
                self._log.append(self._lines.get_nowait())
            except queue.Empty:
                return

    def wait_for_line(self, pattern: re.Pattern[str], timeout_s: float = 180) -> re.Match[str]:
        """The first log line matching `pattern`; AssertionError with the log if none comes."""
        deadline_s = time.monotonic() + timeout_s
        checked = 0
        while True:
            self._drain_lines()
            for line in self._log[checked:]:
                if match := pattern.search(line):
                    return match
            checked = len(self._log)
            if self.process.poll() is not None and not self._reader.is_alive():
                self._drain_lines()
                if any(pattern.search(line) for line in self._log[checked:]):
                    continue
                raise AssertionError(
                    f"sentiment-server exited ({self.process.returncode}) before logging "
                    f"{pattern.pattern!r}:\n{self.log}"
                )
            if time.monotonic() > deadline_s:
                raise AssertionError(f"no {pattern.pattern!r} within {timeout_s} s:\n{self.log}")
            try:
                self._log.append(self._lines.get(timeout=0.1))
            except queue.Empty:
                pass

    def wait_until_serving(self, timeout_s: float = 180) -> int:
        """The port, once the server logs that it serves."""
        return int(self.wait_for_line(SERVING_LINE, timeout_s).group(1))

    def wait(self, timeout_s: float = 180) -> int:
        """The exit status, once the process has exited and its log is read to the end."""
        status = self.process.wait(timeout_s)
        self._reader.join(30)
        self._drain_lines()
        return status

    @property
    def log(self) -> str:
        self._drain_lines()
        return "\n".join(self._log)

    def own_error_lines(self) -> list[str]:
        """The server's own lines at ERROR level, and setting errors ("sentiment-server: error")."""
        errors = []
        for line in self.log.splitlines():
            match = _OWN_LINE.match(line)
            if match and (match.group("level") == "ERROR" or " error: " in line[:30]):
                errors.append(line)
        return errors
