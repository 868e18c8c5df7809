"""Prometheus /metrics (`--metrics-port`): calls, batches, the queue and the model version.

Counters that the batcher already keeps (reviews scored, batches, drops) and
the queue depth are read from `MicroBatcher.stats()` at scrape time, so those
numbers exist in one place only. Distributions (call latency, queue wait,
inference time, batch size) are histograms fed as events happen: by the call
observer for each call and by the batcher's `on_batch` hook for each batch.
Call metrics use go-grpc-prometheus's names, so existing gRPC dashboards work.
Everything lives in one private registry per server, with the standard process
and garbage-collector collectors and the Python heap's allocated blocks, so a
memory curve can tell a growing Python heap from a growing native one.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from server.batching.batcher import BatcherStats, BatchRecord
from server.explanations.explain import ExplainerStats
from server.observability.heap import CollectionTimer
from server.observability.malloc import malloc_bytes

# Seconds: a micro-batched call takes milliseconds, a queued one up to its deadline.
CALL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Queue waits are bounded by --max-delay-ms (5 ms) when the model keeps up.
QUEUE_WAIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
INFERENCE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# One explanation: about 0.1 s for a 230-word review on 2 CPU cores, more for longer ones.
EXPLAIN_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
_CALL_LABELS = ("grpc_type", "grpc_service", "grpc_method")


def batch_size_buckets(max_batch_size: int) -> tuple[float, ...]:
    """Powers of two below `max_batch_size`, then `max_batch_size` itself: full batches show."""
    buckets, size = [], 1
    while size < max_batch_size:
        buckets.append(size)
        size *= 2
    return (*buckets, max_batch_size)


class ServedModel(Protocol):
    name: str
    version: int


class ModelSource(Protocol):
    """What the metrics read of the model manager."""

    @property
    def current(self) -> ServedModel: ...

    versions_loaded: int
    versions_failed: int


class ServerMetrics:
    """Every metric of one server, in its own registry (tests run several servers at once)."""

    def __init__(self, max_batch_size: int):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, open fds, CPU seconds
        GCCollector(registry=r)
        r.register(PythonHeapCollector())
        # Started and stopped with the server (gc.callbacks is one list for the process).
        self.collections = CollectionTimer()
        r.register(CollectionPauseCollector(self.collections))
        self.calls_started = Counter(
            "grpc_server_started", "Calls started.", _CALL_LABELS, registry=r
        )
        self.calls_handled = Counter(
            "grpc_server_handled",
            "Calls finished, by status code.",
            (*_CALL_LABELS, "grpc_code"),
            registry=r,
        )
        self.call_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from a call's start to its status.",
            _CALL_LABELS,
            buckets=CALL_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "sentiment_batch_size",
            "Reviews per model call.",
            buckets=batch_size_buckets(max_batch_size),
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            "sentiment_queue_wait_seconds",
            "Time each review that reached the model spent queued.",
            buckets=QUEUE_WAIT_BUCKETS_S,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "sentiment_inference_seconds",
            "Time each batch spent in the model.",
            buckets=INFERENCE_BUCKETS_S,
            registry=r,
        )

        self.explain_seconds = Histogram(
            "sentiment_explain_seconds",
            "Time each explanation spent in the model (queue time not included).",
            buckets=EXPLAIN_BUCKETS_S,
            registry=r,
        )

    def observe_explanation(self, seconds: float) -> None:
        """The Explainer's on_explained hook (called on its worker thread; histograms lock)."""
        self.explain_seconds.observe(seconds)

    def observe_batch(self, record: BatchRecord) -> None:
        """The batcher's on_batch hook."""
        self.batch_size.observe(record.size)
        self.inference_seconds.observe(record.inference_s)
        for wait_s in record.queue_waits_s:
            self.queue_wait_seconds.observe(wait_s)

    def call_started(self, call_type: str, method: str) -> None:
        self.calls_started.labels(call_type, *_service_and_method(method)).inc()

    def call_finished(self, call_type: str, method: str, code: str, duration_s: float) -> None:
        service, name = _service_and_method(method)
        self.calls_handled.labels(call_type, service, name, code).inc()
        self.call_seconds.labels(call_type, service, name).observe(duration_s)

    def watch(
        self,
        stats: Callable[[], BatcherStats],
        models: ModelSource,
        explain_stats: Callable[[], ExplainerStats] | None = None,
    ) -> None:
        """Reads the batcher's and explainer's counters and the serving version at each scrape."""
        self.registry.register(BatcherCollector(stats))
        self.registry.register(ModelCollector(models))
        if explain_stats is not None:
            self.registry.register(ExplainerCollector(explain_stats))


def _service_and_method(method: str) -> tuple[str, str]:
    """ "/sentiment.v1.SentimentService/Predict" -> ("sentiment.v1.SentimentService", "Predict")."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class PythonHeapCollector:
    """The Python allocator's blocks and glibc malloc's bytes in use and free: which one grows
    when RSS does (a flat Python heap and growing free bytes: the allocator keeps memory)."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "python_heap_allocated_blocks",
            "Memory blocks allocated by the Python interpreter (sys.getallocatedblocks()).",
            value=sys.getallocatedblocks(),
        )
        held = malloc_bytes()
        if held is not None:  # glibc only
            yield GaugeMetricFamily(
                "process_malloc_in_use_bytes",
                "Bytes glibc's malloc has handed out and not had back.",
                value=held["in_use"],
            )
            yield GaugeMetricFamily(
                "process_malloc_free_bytes",
                "Bytes freed to glibc's malloc and kept in its arenas (part of RSS).",
                value=held["free"],
            )


class CollectionPauseCollector:
    """How long the cycle collector's passes held the interpreter, by generation: a full
    pass (generation 2) over an unfrozen model's objects is a pause of a few hundred ms."""

    def __init__(self, timer: CollectionTimer):
        self._timer = timer

    def collect(self) -> Iterator[Metric]:
        pauses = SummaryMetricFamily(
            "python_gc_pause_seconds",
            "Time passes of Python's cycle collector held the interpreter, by generation.",
            labels=("generation",),
        )
        longest = GaugeMetricFamily(
            "python_gc_pause_longest_seconds",
            "The longest pass of Python's cycle collector so far, by generation.",
            labels=("generation",),
        )
        timer = self._timer
        for generation in range(3):
            label = [str(generation)]
            pauses.add_metric(label, timer.count[generation], timer.seconds[generation])
            longest.add_metric(label, timer.longest_s[generation])
        yield pauses
        yield longest


class BatcherCollector:
    """Turns one BatcherStats snapshot per scrape into Prometheus metric families."""

    def __init__(self, stats: Callable[[], BatcherStats]):
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield CounterMetricFamily("sentiment_batches", "Batches the model ran.", value=s.batches)
        yield CounterMetricFamily(
            "sentiment_reviews_scored", "Reviews that reached the model.", value=s.reviews
        )
        yield CounterMetricFamily(
            "sentiment_failed_batches", "Batches the model failed on.", value=s.failed_batches
        )
        dropped = CounterMetricFamily(
            "sentiment_reviews_dropped", "Reviews that never reached the model.", labels=["reason"]
        )
        dropped.add_metric(["cancelled"], s.dropped_cancelled)
        dropped.add_metric(["deadline"], s.dropped_expired)
        dropped.add_metric(["queue_full"], s.rejected_full)
        dropped.add_metric(["would_miss_deadline"], s.rejected_late)
        yield dropped
        yield GaugeMetricFamily(
            "sentiment_queue_depth", "Reviews waiting now.", value=s.queue_depth
        )
        if s.estimated_review_s is not None:  # none until a batch has run
            yield GaugeMetricFamily(
                "sentiment_estimated_review_seconds",
                "What admission expects a review to cost in a batch now (median of the last few).",
                value=s.estimated_review_s,
            )
        yield GaugeMetricFamily(
            "sentiment_mean_batch_size", "Reviews per batch since start.", value=s.mean_batch_size
        )


class ExplainerCollector:
    """The Explain queue's counters, one snapshot per scrape."""

    def __init__(self, stats: Callable[[], ExplainerStats]):
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield CounterMetricFamily("sentiment_explanations", "Reviews explained.", value=s.explained)
        dropped = CounterMetricFamily(
            "sentiment_explanations_dropped",
            "Explain calls that never reached the model.",
            labels=["reason"],
        )
        dropped.add_metric(["cancelled"], s.dropped_cancelled)
        dropped.add_metric(["deadline"], s.dropped_expired)
        dropped.add_metric(["queue_full"], s.rejected_full)
        yield dropped
        yield GaugeMetricFamily(
            "sentiment_explain_queue_depth",
            "Explain calls waiting or running now.",
            value=s.admitted,
        )


class ModelCollector:
    """The version serving now (an info gauge), and how version loads went."""

    def __init__(self, models: ModelSource):
        self._models = models

    def collect(self) -> Iterator[Metric]:
        model = self._models.current
        info = GaugeMetricFamily(
            "sentiment_model_info",
            "The model version serving now (always 1).",
            labels=["name", "version"],
        )
        info.add_metric([model.name, str(model.version)], 1)
        yield info
        loads = CounterMetricFamily(
            "sentiment_model_loads", "Model versions loaded, or failed to load.", labels=["outcome"]
        )
        loads.add_metric(["loaded"], self._models.versions_loaded)
        loads.add_metric(["failed"], self._models.versions_failed)
        yield loads


@dataclass
class MetricsServer:
    """The /metrics HTTP server on its own daemon thread."""

    http_server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.http_server.server_port

    def stop(self) -> None:
        self.http_server.shutdown()
        self.http_server.server_close()


def start_metrics_server(host: str, port: int, registry: CollectorRegistry) -> MetricsServer:
    """Serves `registry` (and nothing else: no process-global metrics) on host:port/metrics."""
    # gRPC writes IPv6 hosts as "[::]"; the HTTP server wants them bare.
    http_server, thread = start_http_server(port, addr=host.strip("[]"), registry=registry)
    return MetricsServer(http_server, thread)


class _LiveOnly:
    """A registry's collectors less the metrics that multiprocess mode keeps in files."""

    def __init__(self, registry: CollectorRegistry, skip: set[str]):
        self._registry = registry
        self._skip = skip

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            if metric.name not in self._skip:
                yield metric


def multiprocess_registry(metrics: ServerMetrics, directory: str) -> CollectorRegistry:
    """For `--workers N`: the counters and histograms of every process (each front's calls,
    the model process's batches), summed from prometheus-client's files in `directory`,
    beside the model process's own live collectors (queue, model, explain, process)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    shared = (
        metrics.calls_started,
        metrics.calls_handled,
        metrics.call_seconds,
        metrics.batch_size,
        metrics.queue_wait_seconds,
        metrics.inference_seconds,
        metrics.explain_seconds,
    )
    skip = {family.name for metric in shared for family in metric.describe()}
    registry.register(_LiveOnly(metrics.registry, skip))
    return registry
