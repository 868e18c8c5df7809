"""Prometheus /metrics (`--metrics-port`): the batcher's stats, read at scrape time.

The collector reads `MicroBatcher.stats()` when scraped instead of keeping
counters of its own, so the numbers exist in one place only. Mean batch size
over an interval is Δsentiment_reviews_scored_total / Δsentiment_batches_total.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from server.batcher import BatcherStats


class BatcherCollector:
    """Turns one BatcherStats snapshot per scrape into Prometheus metric families."""

    def __init__(self, stats: Callable[[], BatcherStats], model_name: str, model_version: int):
        self._stats = stats
        self._model = (model_name, str(model_version))

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
        yield dropped
        yield CounterMetricFamily(
            "sentiment_queue_wait_seconds",
            "Time scored reviews spent queued, summed over reviews.",
            value=s.queue_wait_s_total,
        )
        yield CounterMetricFamily(
            "sentiment_inference_seconds",
            "Time spent in the model, summed over batches.",
            value=s.inference_s_total,
        )
        yield GaugeMetricFamily(
            "sentiment_queue_depth", "Reviews waiting now.", value=s.queue_depth
        )
        yield GaugeMetricFamily(
            "sentiment_mean_batch_size", "Reviews per batch since start.", value=s.mean_batch_size
        )
        info = GaugeMetricFamily(
            "sentiment_model", "The model serving (always 1).", labels=["name", "version"]
        )
        info.add_metric(list(self._model), 1)
        yield info


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


def start_metrics_server(host: str, port: int, collector: BatcherCollector) -> MetricsServer:
    """Serves `collector` (and nothing else: no process-global registry) on host:port/metrics."""
    registry = CollectorRegistry()
    registry.register(collector)
    # gRPC writes IPv6 hosts as "[::]"; the HTTP server wants them bare.
    http_server, thread = start_http_server(port, addr=host.strip("[]"), registry=registry)
    return MetricsServer(http_server, thread)
