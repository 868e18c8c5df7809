"""Entry point: `sentiment-server --model-dir models/imdb-lstm --port 50051` (see --help).

`create_server(config)` builds a bound, not yet started server (tests use
port 0); `serve(config)` runs one until SIGTERM/SIGINT, then drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.api import security
from server.api.http_api import HttpApi
from server.api.interceptor import CallObserver
from server.api.kserve_grpc import SERVICE_NAME as INFERENCE_SERVICE_NAME
from server.api.kserve_grpc import add_to_server as add_inference_protocol
from server.api.kserve_http import InferenceProtocolHttp
from server.api.servicer import RequestLimits, SentimentServicer
from server.batching.batcher import BatcherStats, MicroBatcher
from server.batching.model_gate import ModelGate
from server.config import ServerConfig, describe, load_config
from server.errors import StartupError
from server.explanations.explain import Explainer
from server.observability import heap
from server.observability.logs import configured_logging
from server.observability.malloc import cap_arenas
from server.observability.metrics import (
    MetricsServer,
    ServerMetrics,
    multiprocess_registry,
    start_metrics_server,
)
from server.processes import retire, supervisor
from server.processes.engine import EngineListener
from server.processes.engine_client import EngineClient
from server.scoring.versions import ModelManager

if TYPE_CHECKING:  # server.scoring.model imports TensorFlow: seconds, so only when serving
    from server.scoring.model import ServingModel

logger = logging.getLogger("server")

SERVICE_NAME = sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"].full_name


@dataclass
class SentimentServer:
    """A bound gRPC server with its batcher and health status, started and stopped together."""

    grpc_server: grpc.aio.Server
    batcher: MicroBatcher
    health: health.aio.HealthServicer
    model: ModelManager  # describes, and predicts with, whichever version serves now
    config: ServerConfig
    server_metrics: ServerMetrics
    metrics: MetricsServer | None = None
    poller: asyncio.Task | None = None
    http_api: HttpApi | None = None  # with --http-port
    explainer: Explainer | None = None
    servicer: SentimentServicer | None = None  # told to refuse new calls when the drain begins
    # In a front process (--workers): the model process's batcher and model, over a socket.
    engine: EngineClient | None = None
    port: int = 0  # the gRPC port, bound

    async def start(self) -> None:
        await self.grpc_server.start()
        if self.config.metrics_port and self.engine is None:  # the model process serves them
            try:
                self.metrics = start_metrics_server(
                    self.config.host, self.config.metrics_port, self.server_metrics.registry
                )
            except OSError as exc:
                await self.grpc_server.stop(0)
                raise StartupError(
                    f"cannot serve metrics on {self.config.host}:{self.config.metrics_port}: {exc}"
                ) from exc
            logger.info("Prometheus metrics on port %d at /metrics", self.metrics.port)
        if self.http_api is not None:
            try:
                http_port = await self.http_api.start(
                    self.config.host,
                    self.config.http_port,
                    reuse_port=self.engine is not None or self.config.reuse_port,
                )
            except StartupError:
                await self.grpc_server.stop(0)
                if self.metrics is not None:
                    self.metrics.stop()
                    self.metrics = None
                raise
            logger.info("HTTP/JSON API and demo page on port %d (POST /predict, GET /)", http_port)
        if self.config.gc_freeze:
            heap.freeze()
        self.server_metrics.collections.start()  # timing serving's passes, not start-up's
        if self.engine is not None:  # SERVING while the model process is there
            await self.set_serving(self.engine.connected)
        else:  # SERVING only now: the model was warmed up before the server was built.
            await self.set_serving(True)
        if self.model.polls and self.config.poll_s > 0:
            self.poller = asyncio.create_task(
                self.model.poll_forever(self.config.poll_s), name="model-version-poller"
            )

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status.SERVING if serving else status.NOT_SERVING)

    async def stop(self, grace_s: float | None = None) -> None:
        """Drains: NOT_SERVING, refuse new calls, let in-flight ones finish within grace_s."""
        grace_s = self.config.grace_s if grace_s is None else grace_s
        if self.poller is not None:  # no new version is swapped in while draining
            self.poller.cancel()
            await asyncio.gather(self.poller, return_exceptions=True)
            self.poller = None
        if self.servicer is not None:
            self.servicer.drain()
        await self.health.enter_graceful_shutdown()
        # In-flight calls still need the batcher, so it closes after both listeners stop.
        listeners = [self.grpc_server.stop(grace_s)]
        if self.http_api is not None:  # answers 503 while its in-flight requests finish
            listeners.append(self.http_api.stop(grace_s))
        await asyncio.gather(*listeners)
        await self.batcher.close(drain_timeout_s=0)
        if self.explainer is not None:
            await self.explainer.close()
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.config.gc_freeze:
            heap.thaw()
        self.server_metrics.collections.stop()
        if self.engine is None:
            logger.info("stopped; batcher stats: %s", self.batcher.stats().summary())
        else:
            logger.info("stopped")

    async def hand_over(self, stop_requested: asyncio.Event) -> None:
        """A recycled front's first step out (server/processes/retire.py): no new connections;
        serve until every open one has aged out to another front (at most a limit), or a stop
        is requested."""
        closed = retire.close_listeners(self.port)
        if self.http_api is not None:
            await self.http_api.stop_listening()
        limit_s = retire.handover_limit_s(connection_age_s(self.config, front=True))
        logger.info(
            "retiring: closed %d gRPC listener(s); serving while clients move (at most %.1f s)",
            closed,
            limit_s,
        )
        started_s = time.monotonic()
        left = await retire.connections_moved(self.port, limit_s, stop_requested)
        logger.info(
            "retiring: %s after %.1f s",
            f"{left} gRPC connection(s) still open" if left else "every gRPC connection moved",
            time.monotonic() - started_s,
        )

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()

    def stats(self) -> BatcherStats:
        return self.batcher.stats()


async def create_server(
    config: ServerConfig, model: ServingModel | None = None, engine: EngineClient | None = None
) -> tuple[SentimentServer, int]:
    """Loads and warms the model (unless given one), then binds a server; returns it and its port.

    Without `model` it serves the highest version under config.model_dir that
    loads, and polls for newer ones; a given model is pinned (no polling).
    With `engine` (a front process of --workers) it loads nothing: the model
    process batches and scores, and the port is shared with the other fronts.
    Call inside the event loop that will run the server.
    """
    # TLS files and the token are checked first: a bad one should not cost a model load.
    credentials = security.server_credentials(config)
    # The observer is outermost, so calls refused by authentication are counted and logged.
    metrics = ServerMetrics(config.max_batch_size)
    interceptors = [CallObserver(metrics, config.slow_request_ms), *security.interceptors(config)]
    if engine is not None:
        batcher = models = explainer = engine
    else:
        models, batcher, explainer = build_core(config, metrics, model)
    limits = RequestLimits(
        max_reviews_per_request=config.max_reviews_per_request,
        max_review_bytes=config.max_review_bytes,
        default_timeout_ms=config.default_timeout_ms,
    )
    grpc_server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.max_receive_message_bytes),
            # Without this a second server on a busy port would start and share it silently;
            # front processes share theirs on purpose (the supervisor checked it was free).
            ("grpc.so_reuseport", 1 if engine is not None or config.reuse_port else 0),
            *connection_age_options(connection_age_s(config, engine is not None), config.grace_s),
        ],
    )
    servicer = SentimentServicer(models, batcher, limits, explainer)
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(servicer, grpc_server)
    # The Open Inference Protocol (KServe v2): a second door into the same servicer's batcher.
    add_inference_protocol(servicer, models, limits, grpc_server)
    health_servicer = health.aio.HealthServicer()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    if config.reflection:
        names = (
            SERVICE_NAME,
            INFERENCE_SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, grpc_server)
    try:
        if credentials is None:
            port = grpc_server.add_insecure_port(config.address)
        else:
            port = grpc_server.add_secure_port(config.address, credentials)
    except RuntimeError as exc:
        raise StartupError(
            f"cannot listen on {config.address}: {exc} (is the port in use?)"
        ) from exc
    logger.info("%s", security.describe(config))
    server = SentimentServer(grpc_server, batcher, health_servicer, models, config, metrics)
    server.port = port
    server.explainer = explainer if engine is None else None
    server.servicer = servicer
    server.engine = engine
    if config.http_port:  # the same servicer, so the same checks, limits and batcher
        server.http_api = HttpApi(
            servicer,
            models,
            timeout_s=config.default_timeout_ms / 1000,
            max_body_bytes=config.max_receive_message_bytes,
        )
        http_api = server.http_api
        http_api.extra_routes += InferenceProtocolHttp(
            servicer,
            models,
            max_reviews=config.max_reviews_per_request,
            timeout_s=config.default_timeout_ms / 1000,
            ready=lambda: http_api.ready,
        ).routes()
    return server, port


def build_core(
    config: ServerConfig, metrics: ServerMetrics, model: ServingModel | None = None
) -> tuple[ModelManager, MicroBatcher, Explainer]:
    """The model (loaded and warmed, unless given), its batcher and its explainer."""
    if model is None:
        # Blocks the loop for seconds, but nothing else runs on it before start().
        models = load_models(config)
    else:
        models = ModelManager(model)
    # Predict's batches and Explain take turns on the model: batches first, Explain when idle.
    gate = ModelGate()
    batcher = MicroBatcher(
        gate.first(models.predict),
        max_batch_size=config.max_batch_size,
        max_delay_ms=config.max_delay_ms,
        queue_capacity=config.queue_capacity,
        deadline_admission=config.deadline_admission,
        on_batch=metrics.observe_batch,
    )
    gate.pending = batcher.has_waiting
    # Explain has its own worker thread and queue: never a place in Predict's queue.
    explainer = Explainer(
        models,
        queue_capacity=config.explain_queue_capacity,
        gate=gate,
        on_explained=metrics.observe_explanation,
    )
    metrics.watch(batcher.stats, models, explainer.stats)
    return models, batcher, explainer


def connection_age_s(config: ServerConfig, front: bool = False) -> float:
    """--max-connection-age-s; for a front that is recycled, at most RECYCLE_CONNECTION_AGE_S:
    when it retires, its clients move to the other fronts as their connections age out."""
    if front and config.max_calls_per_worker > 0:
        if config.max_connection_age_s <= 0:
            return retire.RECYCLE_CONNECTION_AGE_S
        return min(config.max_connection_age_s, retire.RECYCLE_CONNECTION_AGE_S)
    return config.max_connection_age_s


def connection_age_options(age_s: float, grace_s: float) -> list[tuple[str, int]]:
    """gRPC clients re-resolve DNS only when a connection closes: closing each one after
    --max-connection-age-s lets round_robin clients of a headless Service find new pods."""
    if age_s <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", round(1000 * age_s)),
        ("grpc.max_connection_age_grace_ms", round(1000 * grace_s)),
    ]


def load_models(config: ServerConfig) -> ModelManager:
    """The highest version under --model-dir that loads, warmed up, in a polling manager."""
    from server.scoring.model import load_and_warm  # TensorFlow: only once something loads

    return ModelManager.from_directory(config.model_dir, load_and_warm(config.device))


async def serve(config: ServerConfig, model: ServingModel | None = None) -> None:
    """Runs until SIGTERM or SIGINT, then drains within config.grace_s.

    `model`, as for create_server: a model to serve pinned (bench.common.slow_server's wrapper).
    """
    server, port = await create_server(config, model)
    await server.start()
    logger.info("serving on %s:%d", config.host, port)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    stats_logger = asyncio.create_task(_log_stats(server, config.stats_interval_s))
    try:
        await stop_requested.wait()
        logger.info("stop requested; draining for up to %.1f s", config.grace_s)
    finally:
        stats_logger.cancel()
        await server.stop(config.grace_s)


def _stop_on_signals() -> asyncio.Event:
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    return stop_requested


async def serve_front(config: ServerConfig) -> None:
    """A front process of --workers: takes calls until SIGTERM, then drains (the model
    process, reached over its socket, batches and scores)."""
    server: SentimentServer | None = None

    def connected(is_connected: bool) -> None:
        if server is not None and server.servicer is not None:
            asyncio.get_running_loop().create_task(server.set_serving(is_connected))

    engine = EngineClient(
        os.environ[supervisor.SOCKET_ENV],
        on_connected=connected,
        max_calls=config.max_calls_per_worker,
        on_budget_spent=lambda: supervisor.tell_supervisor("recycle"),
    )
    await engine.start()
    await engine.wait_connected(timeout_s=5.0)
    server, port = await create_server(config, engine=engine)
    await server.start()
    logger.info("front process taking calls on %s:%d", config.host, port)
    supervisor.tell_supervisor("ready")
    stop_requested = _stop_on_signals()
    retire_requested = asyncio.Event()  # the supervisor's RETIRE_SIGNAL: a successor serves
    asyncio.get_running_loop().add_signal_handler(supervisor.RETIRE_SIGNAL, retire_requested.set)
    waits = [asyncio.ensure_future(event.wait()) for event in (stop_requested, retire_requested)]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    if retire_requested.is_set() and not stop_requested.is_set():
        await server.hand_over(stop_requested)
    logger.info("stop requested; draining for up to %.1f s", config.grace_s)
    await server.stop(config.grace_s)


async def serve_model_process(config: ServerConfig) -> None:
    """The model process of --workers: one model, one batcher, for every front."""
    metrics = ServerMetrics(config.max_batch_size)
    models, batcher, explainer = build_core(config, metrics)
    listener = EngineListener(batcher, models, explainer)
    await listener.start(os.environ[supervisor.SOCKET_ENV])
    metrics_server = None
    if config.metrics_port:
        registry = multiprocess_registry(metrics, os.environ[supervisor.METRICS_DIR_ENV])
        try:
            metrics_server = start_metrics_server(config.host, config.metrics_port, registry)
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics on {config.host}:{config.metrics_port}: {exc}"
            ) from exc
    poller = None
    if models.polls and config.poll_s > 0:
        poller = asyncio.create_task(models.poll_forever(config.poll_s), name="model-poller")
    if config.gc_freeze:
        heap.freeze()
    logger.info("model process serving version %d to the fronts", models.version)
    supervisor.tell_supervisor("ready")
    stop_requested = _stop_on_signals()
    stats_logger = asyncio.create_task(_log_batcher_stats(batcher, config.stats_interval_s))
    await stop_requested.wait()
    stats_logger.cancel()
    if poller is not None:
        poller.cancel()
    # The fronts drained first (the supervisor stops them before this process).
    await listener.stop()
    await batcher.close(drain_timeout_s=0)
    await explainer.close()
    if metrics_server is not None:
        metrics_server.stop()
    logger.info("stopped; batcher stats: %s", batcher.stats().summary())


async def _log_batcher_stats(batcher: MicroBatcher, interval_s: float) -> None:
    if interval_s <= 0:
        return
    while True:
        await asyncio.sleep(interval_s)
        logger.info("batcher stats: %s", batcher.stats().summary())


async def _log_stats(server: SentimentServer, interval_s: float) -> None:
    if interval_s <= 0:
        return
    while True:
        await asyncio.sleep(interval_s)
        logger.info("batcher stats: %s", server.stats().summary())


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM interrupts the start-up as Ctrl-C does, until serve() installs its draining handler.

    Left at its default, SIGTERM would end the process just as well, except as a container's
    PID 1, where the kernel ignores a signal that has no handler: a stop during the model load
    would then wait out the whole grace period for SIGKILL.
    """
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def run_role(config: ServerConfig, argv: list[str]) -> None:
    """This process's part: the supervisor of --workers, one of its children, or the whole
    server in one process (--workers 1)."""
    role = os.environ.get(supervisor.ROLE_ENV)
    if role in (supervisor.MODEL_ROLE, supervisor.FRONT_ROLE):
        supervisor.stop_with_supervisor()
    if role == supervisor.MODEL_ROLE:
        await serve_model_process(config)
    elif role == supervisor.FRONT_ROLE:
        await serve_front(config)
    else:
        workers = config.workers or supervisor.default_workers()
        if workers == 1:
            await serve(config)
        else:
            status = await supervisor.supervise(argv, config, workers)
            if status == supervisor.INTERRUPTED:
                raise KeyboardInterrupt  # main() logs "interrupted during start-up", exits 130
            if status:
                raise StartupError("a child process failed at start (its log says why)")


def event_loop_runner(choice: str, workers: int = 0) -> tuple[Callable[[Coroutine], Any], str]:
    """(a function that runs a coroutine to its end on a new event loop, the loop's name):
    uvloop's for "uvloop", and for "auto" across processes (`workers` other than 1) where
    uvloop is installed; asyncio's own otherwise. Measured (bench.doors): across processes
    uvloop serves 13-15% more calls on both doors; in one process no more gRPC calls and
    2-17% fewer HTTP calls, so one process stays on asyncio's loop."""
    if choice == "uvloop" or (choice == "auto" and workers != 1):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":  # load_config checked it is installed
                raise
        else:
            return uvloop.run, f"uvloop {uvloop.__version__}"
    return asyncio.run, "asyncio"


def main(argv: Sequence[str] | None = None) -> int:
    """`sentiment-server [flags]`; exit 0 after a clean drain, 2 on a bad setting, 1 on start-up."""
    # TensorFlow's C++ info lines would drown the server's own start-up log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config = load_config(argv)
    except StartupError as exc:
        print(f"sentiment-server: error: {exc}", file=sys.stderr)
        return 2
    with configured_logging(config.log_level, config.log_format):
        try:
            with _sigterm_interrupts():
                logger.info("settings: %s", describe(config))
                # Before gRPC's and TensorFlow's threads start: arenas made before stay.
                logger.info("%s", cap_arenas(config.malloc_arena_max))
                run, loop = event_loop_runner(config.event_loop, config.workers)
                logger.info("event loop: %s", loop)
                run(run_role(config, list(sys.argv[1:] if argv is None else argv)))
        except StartupError as exc:
            logger.error("cannot start: %s", exc)
            return 1
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM before serve() handles them
            logger.info("interrupted during start-up")
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
