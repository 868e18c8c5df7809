"""Prometheus /metrics: the batcher's stats, scraped over HTTP from a real server."""

from __future__ import annotations

import socket
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from client import sentiment_pb2, sentiment_pb2_grpc
from server.batcher import BatcherStats
from server.metrics import BatcherCollector


def samples(families) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_collector_reports_a_stats_snapshot():
    stats = BatcherStats(batches=4, reviews=10, dropped_expired=2, rejected_full=3, queue_depth=5)
    values = samples(BatcherCollector(lambda: stats, "imdb-lstm", 3).collect())
    assert values[("sentiment_batches_total", ())] == 4
    assert values[("sentiment_reviews_scored_total", ())] == 10
    assert values[("sentiment_mean_batch_size", ())] == 2.5
    assert values[("sentiment_queue_depth", ())] == 5
    assert values[("sentiment_reviews_dropped_total", (("reason", "deadline"),))] == 2
    assert values[("sentiment_reviews_dropped_total", (("reason", "queue_full"),))] == 3
    assert values[("sentiment_model", (("name", "imdb-lstm"), ("version", "3")))] == 1


def test_metrics_port_serves_the_running_batchers_stats(start_server):
    port = free_port()
    with start_server(metrics_port=port) as running:
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            stub.Predict(sentiment_pb2.PredictRequest(reviews=["great", "awful"]), timeout=30)
            stub.Predict(sentiment_pb2.PredictRequest(reviews=["fine"]), timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    values = samples(text_string_to_metric_families(text))
    assert values[("sentiment_reviews_scored_total", ())] == 3
    assert 1 <= values[("sentiment_batches_total", ())] <= 3
    assert values[("sentiment_queue_depth", ())] == 0
    assert values[("sentiment_inference_seconds_total", ())] > 0
    assert "process_cpu_seconds_total" not in text  # a private registry: only our metrics
