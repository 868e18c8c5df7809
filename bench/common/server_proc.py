"""`sentiment-server` in a subprocess on a free loopback port: start, read memory, counters; stop.

The benchmark measures the server as users run it: its own process and
interpreter, settings given as flags, memory read from /proc and batch sizes
from its Prometheus counters.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from server.processes.supervisor import FRONT_ROLE, ROLE_ENV

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# Samples read from /metrics: batches and reviews give the mean batch size, and the summed
# inference time over the wall time how busy the model was.
_COUNTERS = (
    "sentiment_batches_total",
    "sentiment_reviews_scored_total",
    "sentiment_inference_seconds_sum",
)


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later; a race we accept)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_memory_bytes(pid: int) -> dict[str, int]:
    """{"rss_bytes": VmRSS, "peak_rss_bytes": VmHWM} from /proc/<pid>/status (Linux)."""
    fields = {"VmRSS": "rss_bytes", "VmHWM": "peak_rss_bytes"}
    memory: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in fields:
            amount, unit = value.split()
            if unit != "kB":
                raise ValueError(f"/proc/{pid}/status gives {name} in {unit!r}, not kB")
            memory[fields[name]] = int(amount) * 1024
    return memory


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc/<pid>/task/<tid>/children (Linux)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            for child in children.read_text().split():
                found += [int(child), *descendants(int(child))]
        except OSError:  # a thread or process that ended meanwhile
            continue
    return found


def _start_ticks(pid: int) -> int:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat's 22nd field)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2]
    return int(after_name.split()[19])


def _is_front(pid: int) -> bool:
    role = f"{ROLE_ENV}={FRONT_ROLE}".encode()
    return role in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def retiring_fronts(members: list[int], fronts: int) -> set[int]:
    """The front processes beyond the `fronts` youngest: a recycled front's successor takes
    calls before it leaves, so for a few seconds there is one front too many, the oldest."""
    found = []
    for member in members:
        try:
            if _is_front(member):
                found.append((_start_ticks(member), member))
        except OSError:  # ended meanwhile
            continue
    return {member for _, member in sorted(found)[: max(0, len(found) - fronts)]}


def tree_memory_bytes(pid: int, fronts: int | None = None) -> dict[str, int]:
    """read_memory_bytes summed over `pid` and its descendants still alive; with `fronts`
    (--workers), less the fronts retiring (the memory a steady server holds)."""
    total: dict[str, int] = {}
    members = [pid, *descendants(pid)]
    if fronts is not None:
        leaving = retiring_fronts(members, fronts)
        members = [member for member in members if member not in leaving]
    for member in members:
        try:
            memory = read_memory_bytes(member)
        except (OSError, ValueError):
            continue
        for name, value in memory.items():
            total[name] = total.get(name, 0) + value
    return total


def _flag(name: str, value: object) -> str:
    flag = name.replace("_", "-")
    if isinstance(value, bool):  # sentiment-server's booleans are --flag / --no-flag
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag}={value}"


def server_command() -> list[str]:
    """The installed `sentiment-server` beside this interpreter, else the same code via -m."""
    script = Path(sys.executable).with_name("sentiment-server")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("sentiment-server")
    return [found] if found else [sys.executable, "-m", "server.main"]


class ServerProcess:
    """One running `sentiment-server`; use `start_server(...)` to get one that is SERVING."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        settings: dict[str, object],
        *,
        port: int | None = None,
        metrics_port: int | None = None,
        command: list[str] | None = None,
    ):
        """Free ports unless given (a replica restarted where its clients expect it);
        `command`: another program that takes sentiment-server's flags (bench.common.slow_server).
        """
        self.name = log_path.stem  # for progress lines
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.settings = settings
        flags = {
            "host": "127.0.0.1",
            "port": self.port,
            "metrics_port": self.metrics_port,
            "model_dir": model_dir,
            "device": "cpu",
            "stats_interval_s": 0,
            "log_level": "WARNING",
            # One process unless a measurement asks for --workers (bench.doors does): the
            # measurements from before --workers keep measuring what they measured.
            "workers": 1,
            **settings,
        }
        argv = [_flag(name, value) for name, value in flags.items()]
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  closed in stop()
        self.process = subprocess.Popen(
            (command or server_command()) + argv, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_until_serving(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Polls the health service until SERVING; fails with the server's log if it exits."""
        deadline_s = time.monotonic() + timeout_s
        # gRPC's reconnect backoff (1 s growing to 120 s) would see a server that took a minute
        # to load seconds late; reconnect as often as this polls.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 200),
        ]
        with grpc.insecure_channel(self.target, options=options) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"sentiment-server exited with {self.process.returncode} before "
                        f"serving; its log:\n{self.log_tail()}"
                    )
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass  # not listening yet
                if time.monotonic() > deadline_s:
                    raise TimeoutError(f"sentiment-server did not serve within {timeout_s:g} s")
                time.sleep(0.2)

    def metric_families(self) -> list[Metric]:
        """Every metric family the server's /metrics serves now."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return list(text_string_to_metric_families(response.read().decode()))

    def predict_calls(self) -> dict[str, float]:
        """Predict calls started, and finished by status code ("OK", ...), from /metrics."""
        calls: dict[str, float] = {"started": 0.0}
        for family in self.metric_families():
            for sample in family.samples:
                if sample.labels.get("grpc_method") != "Predict":
                    continue
                if sample.name == "grpc_server_started_total":
                    calls["started"] += sample.value
                elif sample.name == "grpc_server_handled_total":
                    code = sample.labels["grpc_code"]
                    calls[code] = calls.get(code, 0.0) + sample.value
        return calls

    def memory_bytes(self) -> dict[str, int]:
        """Summed over the server and its children (--workers: the fronts and the model, not
        a recycled front on its way out)."""
        workers = int(self.settings.get("workers", 1))
        return tree_memory_bytes(self.process.pid, fronts=workers if workers > 1 else None)

    def counters(self) -> dict[str, float]:
        """The batcher's batch and review counters, scraped from /metrics."""
        found = self.scrape(_COUNTERS)
        missing = set(_COUNTERS) - set(found)
        if missing:
            raise RuntimeError(f"/metrics lacks {', '.join(sorted(missing))}")
        return found

    def scrape(self, names: tuple[str, ...]) -> dict[str, float]:
        """Those of these unlabelled samples that the server's /metrics has."""
        return {
            sample.name: sample.value
            for family in self.metric_families()
            for sample in family.samples
            if sample.name in names and not sample.labels
        }

    def samples(self) -> list:
        """Every sample on /metrics (prometheus_client's Sample: name, labels, value)."""
        return [s for family in self.metric_families() for s in family.samples]

    def kill(self) -> int:
        """SIGKILL: no drain, connections cut as a crash or an OOM kill cuts them; the exit code."""
        self.process.kill()
        self.process.wait()
        self._log.close()
        return self.process.returncode

    def stop(self) -> int:
        """SIGTERM (the server drains), then SIGKILL if it has not gone in time; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def start_server(model_dir: Path, log_path: Path, **settings) -> Iterator[ServerProcess]:
    """`with start_server(dir, log, max_batch_size=1) as server:` a SERVING server, then stopped."""
    with start_servers(model_dir, {log_path: settings}) as servers:
        yield servers[0]


@contextmanager
def start_servers(
    model_dir: Path, settings_by_log: dict[Path, dict]
) -> Iterator[list[ServerProcess]]:
    """Several servers at once (they load side by side), all SERVING, then all stopped.

    Measured in turns, servers that run together share whatever else loads the
    machine meanwhile, so a drift in that load favours none of them.
    """
    servers: list[ServerProcess] = []
    try:
        for log_path, settings in settings_by_log.items():
            servers.append(ServerProcess(model_dir, log_path, settings))
        for server in servers:
            server.wait_until_serving()
        yield servers
    finally:
        for server in servers:
            server.stop()


def mean_batch_size(before: dict[str, float], after: dict[str, float]) -> float:
    """Reviews per batch between two counter readings (0.0 if no batch ran)."""
    batches = after["sentiment_batches_total"] - before["sentiment_batches_total"]
    reviews = after["sentiment_reviews_scored_total"] - before["sentiment_reviews_scored_total"]
    return reviews / batches if batches else 0.0


def model_busy_fraction(before: dict[str, float], after: dict[str, float], wall_s: float) -> float:
    """The share of `wall_s` the model spent inferring between two readings."""
    busy_s = after["sentiment_inference_seconds_sum"] - before["sentiment_inference_seconds_sum"]
    return busy_s / wall_s if wall_s > 0 else 0.0


class PeakRss:
    """Samples a process's VmRSS on a thread while a load runs: `with PeakRss(pid) as peak:`."""

    def __init__(self, pid: int, interval_s: float = 0.1):
        self.pid = pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            try:
                rss = read_memory_bytes(self.pid)["rss_bytes"]
            except (OSError, KeyError):
                return  # the process is gone
            self.peak_bytes = max(self.peak_bytes, rss)
            if self._stop.wait(self.interval_s):
                return
