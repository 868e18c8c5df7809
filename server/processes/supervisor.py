"""`sentiment-server --workers N`: one model process and N front processes, kept running.

    sentiment-server --workers 2 --port 50051 --http-port 8080

The supervisor (this process: no TensorFlow, no gRPC) reserves the ports, then runs
the same command again as children, told their role by the environment:
- the model process (`SENTIMENT_PROCESS_ROLE=model`) loads the model and runs the one
  MicroBatcher, serving the fronts over a Unix socket (server/processes/engine.py);
- N front processes (`front`) take gRPC and HTTP calls on the shared ports
  (SO_REUSEPORT: the kernel spreads connections over them), decode, check and
  authenticate them, and queue their reviews in the model process.

A child that dies is started again; the others go on (a front's callers retry; while
the model process is away, fronts answer UNAVAILABLE and health is NOT_SERVING). A
front that has taken --max-calls-per-worker calls asks to be replaced: its successor
starts taking calls on the port first, then the old one is sent RETIRE_SIGNAL: it hands its
clients over (server/processes/retire.py), then drains and exits, losing none.
SIGTERM drains the fronts, then stops the model process. Children tell the supervisor
"ready" and "recycle" through a pipe (SENTIMENT_SUPERVISOR_FD). If the supervisor itself
dies (SIGKILL, the OOM killer), the kernel sends each child SIGTERM: they drain and exit
rather than hold the ports and the model's memory with nobody watching them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

from server.errors import StartupError

logger = logging.getLogger("server.supervisor")

ROLE_ENV = "SENTIMENT_PROCESS_ROLE"
SOCKET_ENV = "SENTIMENT_MODEL_SOCKET"
PIPE_ENV = "SENTIMENT_SUPERVISOR_FD"
WORKER_ENV = "SENTIMENT_WORKER_NAME"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
PARENT_ENV = "SENTIMENT_SUPERVISOR_PID"
MODEL_ROLE, FRONT_ROLE = "model", "front"
# A child that dies this soon after starting, again and again, is not restarted forever.
CRASH_LOOP_S = 5.0
INTERRUPTED = 130  # the exit status of a stop during start-up, as one process gives
RESTART_PAUSE_S = 0.2
RETIRE_SIGNAL = signal.SIGUSR1  # to a front whose successor serves: hand over, then stop
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_supervisor() -> None:
    """In a child: be sent SIGTERM (and so drain and exit) when the supervisor dies, even by
    SIGKILL or the OOM killer, so that no child outlives it holding the ports and the model's
    memory (Linux's PR_SET_PDEATHSIG); exit at once if it died before this ran."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            logger.warning("cannot ask to stop with the supervisor: errno %d", ctypes.get_errno())
    supervisor = os.environ.get(PARENT_ENV)
    if supervisor and os.getppid() != int(supervisor):
        logger.error("the supervisor (pid %s) is gone; exiting", supervisor)
        sys.exit(1)


def default_workers(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """One front per core this process may use: the cores it may run on, or fewer if its
    cgroup's CPU quota (a container's CPU limit) allows fewer."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = open(cpu_max).read().split()
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, not listening: it holds the port (and
    names it, for port 0) while the fronts bind beside it. Refuses a port anything holds."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    address = (bare, port)
    if port:  # held by anything, even another SO_REUSEPORT server: refuse, as one process does
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            probe.bind(address)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port}: {exc} (is the port in use?)"
            ) from exc
        finally:
            probe.close()
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc} (is the port in use?)") from exc
    return sock


@dataclass
class Child:
    role: str
    name: str
    process: asyncio.subprocess.Process | None = None
    started_s: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    recycle: asyncio.Event = field(default_factory=asyncio.Event)
    retired: bool = False  # being replaced or stopped: its exit is expected


class Supervisor:
    """Starts, watches, restarts, recycles and stops the children; see the module docstring."""

    def __init__(self, argv: list[str], config):
        self.config = config
        self.argv = argv
        self.workdir = tempfile.mkdtemp(prefix="sentiment-server-")
        self.socket_path = os.path.join(self.workdir, "model.sock")
        self.metrics_dir = os.path.join(self.workdir, "metrics")
        os.mkdir(self.metrics_dir)
        self.ports: dict[str, int] = {}
        self._reserved: list[socket.socket] = []
        self.children: list[Child] = []
        self._fronts_made = 0
        self._stopping = False
        self._failed: StartupError | None = None
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()  # each child's pipe and watch, and recycles

    # -- start-up -----------------------------------------------------------------------

    def reserve_ports(self) -> None:
        config = self.config
        for name in ("port", "http_port"):
            wanted = getattr(config, name)
            if name == "http_port" and not wanted:
                continue
            sock = reserve_port(config.host, wanted)
            self._reserved.append(sock)
            self.ports[name] = sock.getsockname()[1]

    def child_argv(self) -> list[str]:
        extra = [f"--port={self.ports['port']}"]
        if "http_port" in self.ports:
            extra.append(f"--http-port={self.ports['http_port']}")
        return [sys.executable, "-m", "server.main", *self.argv, *extra]

    async def start_child(self, role: str) -> Child:
        if role == FRONT_ROLE:
            self._fronts_made += 1
            name = f"front-{self._fronts_made}"
        else:
            name = "model"
        child = Child(role, name)
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env.update(
            {
                ROLE_ENV: role,
                SOCKET_ENV: self.socket_path,
                PIPE_ENV: str(write_fd),
                WORKER_ENV: name,
                METRICS_DIR_ENV: self.metrics_dir,
                PARENT_ENV: str(os.getpid()),
            }
        )
        child.process = await asyncio.create_subprocess_exec(
            *self.child_argv(), env=env, pass_fds=(write_fd,), stdin=asyncio.subprocess.DEVNULL
        )
        os.close(write_fd)
        child.started_s = time.monotonic()
        self.children.append(child)
        for task in (
            asyncio.create_task(self._listen(child, read_fd), name=f"{name}-pipe"),
            asyncio.create_task(self._watch(child), name=f"{name}-watch"),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return child

    async def _listen(self, child: Child, read_fd: int) -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
        )
        try:
            while line := await reader.readline():
                word = line.decode(errors="replace").strip()
                if word == "ready":
                    child.ready.set()
                elif word == "recycle" and not child.retired:
                    child.recycle.set()
                    task = asyncio.create_task(self.replace(child), name=f"{child.name}-recycle")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            transport.close()

    async def _watch(self, child: Child) -> None:
        code = await child.process.wait()
        self.children.remove(child)
        self._changed.set()
        if child.retired or self._stopping:
            return
        ran_s = time.monotonic() - child.started_s
        if not child.ready.is_set():
            # It never came up: a bad setting or model is not fixed by starting it again.
            self._failed = StartupError(f"the {child.name} process exited with {code} at start")
            logger.error("%s", self._failed)
            self._stop_event.set()
            return
        logger.error(
            "the %s process (pid %d) exited with %s after %.1f s; starting another",
            child.name,
            child.process.pid,
            code,
            ran_s,
        )
        if ran_s < CRASH_LOOP_S:
            await asyncio.sleep(RESTART_PAUSE_S)
        if not self._stopping:
            new = await self.start_child(child.role)
            logger.info("started %s (pid %d) in its place", new.name, new.process.pid)
            with contextlib.suppress(Exception):
                _mark_dead(child.process.pid)

    async def replace(self, old: Child) -> None:
        """A new front takes calls on the port before the old one stops taking them."""
        new = await self.start_child(FRONT_ROLE)
        await new.ready.wait()
        old.retired = True
        logger.info("%s replaced by %s after its call budget; retiring it", old.name, new.name)
        with contextlib.suppress(ProcessLookupError):
            old.process.send_signal(RETIRE_SIGNAL)

    # -- running ------------------------------------------------------------------------

    async def run(self, workers: int) -> int:
        self._stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop_event.set)
        model = await self.start_child(MODEL_ROLE)
        fronts = [await self.start_child(FRONT_ROLE) for _ in range(workers)]
        waiting = [asyncio.create_task(c.ready.wait()) for c in (model, *fronts)]
        all_ready = asyncio.gather(*waiting)
        stopped = asyncio.create_task(self._stop_event.wait())
        await asyncio.wait([stopped, all_ready], return_when="FIRST_COMPLETED")
        interrupted = not all_ready.done()
        if not interrupted:
            logger.info(
                "serving on %s:%d with %d front processes (pids %s) and a model process (pid %d)",
                self.config.host,
                self.ports["port"],
                workers,
                ", ".join(str(c.process.pid) for c in fronts),
                model.process.pid,
            )
        await stopped
        all_ready.cancel()
        await asyncio.gather(all_ready, return_exceptions=True)
        await self.stop()
        if self._failed is not None:
            return 1
        # Stopped before every child served: as one process stopped during its start-up.
        return INTERRUPTED if interrupted else 0

    async def stop(self) -> None:
        """SIGTERM to the fronts (they drain), then to the model process."""
        self._stopping = True
        logger.info("stop requested; draining %d processes", len(self.children))
        grace_s = self.config.grace_s + 5
        fronts = [c for c in self.children if c.role == FRONT_ROLE]
        await _terminate(fronts, grace_s)
        await _terminate([c for c in self.children if c.role == MODEL_ROLE], grace_s)
        for sock in self._reserved:
            sock.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        # Every child has exited; what still waits on one (a pipe's end of file) is done.
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _terminate(children: list[Child], grace_s: float) -> None:
    for child in children:
        child.retired = True
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        try:
            await asyncio.wait_for(child.process.wait(), grace_s)
        except asyncio.TimeoutError:
            logger.error("%s did not stop within %.0f s; killing it", child.name, grace_s)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await child.process.wait()


def _mark_dead(pid: int) -> None:
    """Drops a dead process's live gauges from the shared metrics (prometheus multiprocess)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def tell_supervisor(word: str) -> None:
    """In a child: "ready" once serving, "recycle" when its call budget is spent."""
    fd = os.environ.get(PIPE_ENV)
    if fd:
        with contextlib.suppress(OSError):
            os.write(int(fd), (word + "\n").encode())


async def supervise(argv: list[str], config, workers: int) -> int:
    supervisor = Supervisor(argv, config)
    supervisor.reserve_ports()
    return await supervisor.run(workers)
