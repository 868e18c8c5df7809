"""Prometheus /metrics: calls by method and code, batch and queue histograms, the model version."""

from __future__ import annotations

import dataclasses
import socket
import urllib.request
from types import SimpleNamespace

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.batching.batcher import BatcherStats
from server.observability.metrics import BatcherCollector, ModelCollector, batch_size_buckets

SERVICE = "sentiment.v1.SentimentService"


def samples(families) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> tuple[dict[tuple[str, tuple], float], str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return samples(text_string_to_metric_families(text)), text


def call_labels(method: str, kind: str = "unary", **more: str) -> tuple:
    labels = {"grpc_method": method, "grpc_service": SERVICE, "grpc_type": kind, **more}
    return tuple(sorted(labels.items()))


def test_batch_size_buckets_end_at_the_largest_batch():
    assert batch_size_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batch_size_buckets(24) == (1, 2, 4, 8, 16, 24)
    assert batch_size_buckets(1) == (1,)


def test_collectors_report_a_stats_snapshot_and_the_serving_version():
    stats = BatcherStats(batches=4, reviews=10, dropped_expired=2, rejected_full=3, queue_depth=5)
    stats = dataclasses.replace(stats, rejected_late=7, estimated_review_s=0.25)
    models = SimpleNamespace(
        current=SimpleNamespace(name="imdb-lstm", version=3), versions_loaded=2, versions_failed=1
    )
    values = samples(
        [*BatcherCollector(lambda: stats).collect(), *ModelCollector(models).collect()]
    )
    assert values[("sentiment_batches_total", ())] == 4
    assert values[("sentiment_reviews_scored_total", ())] == 10
    assert values[("sentiment_mean_batch_size", ())] == 2.5
    assert values[("sentiment_queue_depth", ())] == 5
    assert values[("sentiment_reviews_dropped_total", (("reason", "deadline"),))] == 2
    assert values[("sentiment_reviews_dropped_total", (("reason", "queue_full"),))] == 3
    would_miss = (("reason", "would_miss_deadline"),)
    assert values[("sentiment_reviews_dropped_total", would_miss)] == 7
    assert values[("sentiment_estimated_review_seconds", ())] == 0.25
    assert values[("sentiment_model_info", (("name", "imdb-lstm"), ("version", "3")))] == 1
    assert values[("sentiment_model_loads_total", (("outcome", "failed"),))] == 1


def test_scrape_after_traffic_counts_calls_reviews_batches_and_the_version(start_server):
    port = free_port()
    with start_server(metrics_port=port) as running:
        before, _ = scrape(port)
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            stub.Predict(sentiment_pb2.PredictRequest(reviews=["great", "awful"]), timeout=30)
            stub.Predict(sentiment_pb2.PredictRequest(reviews=["fine"]), timeout=30)
            with pytest.raises(grpc.RpcError):
                stub.Predict(sentiment_pb2.PredictRequest(reviews=[]), timeout=30)
            stub.GetModelInfo(sentiment_pb2.GetModelInfoRequest(), timeout=30)
            requests = [sentiment_pb2.StreamPredictRequest(id=str(i), review="fun") for i in (1, 2)]
            assert len(list(stub.StreamPredict(iter(requests), timeout=30))) == 2
        values, text = scrape(port)

    assert before[("sentiment_reviews_scored_total", ())] == 0
    assert ("sentiment_estimated_review_seconds", ()) not in before  # no batch has run yet
    assert ("grpc_server_handled_total", call_labels("Predict", grpc_code="OK")) not in before
    # Calls by method and status code, and their latency.
    assert values[("grpc_server_started_total", call_labels("Predict"))] == 3
    assert values[("grpc_server_handled_total", call_labels("Predict", grpc_code="OK"))] == 2
    invalid = call_labels("Predict", grpc_code="INVALID_ARGUMENT")
    assert values[("grpc_server_handled_total", invalid)] == 1
    assert values[("grpc_server_handled_total", call_labels("GetModelInfo", grpc_code="OK"))] == 1
    stream_ok = call_labels("StreamPredict", "bidi_stream", grpc_code="OK")
    assert values[("grpc_server_handled_total", stream_ok)] == 1
    assert values[("grpc_server_handling_seconds_count", call_labels("Predict"))] == 3
    every_predict = call_labels("Predict", le="+Inf")
    assert values[("grpc_server_handling_seconds_bucket", every_predict)] == 3
    assert values[("grpc_server_handling_seconds_sum", call_labels("Predict"))] > 0
    # Reviews and batches: 2 + 1 + 2 reviews scored (the empty request never queued).
    scored = values[("sentiment_reviews_scored_total", ())]
    batches = values[("sentiment_batches_total", ())]
    assert scored == 5
    assert 3 <= batches <= 5
    assert values[("sentiment_batch_size_count", ())] == batches
    assert values[("sentiment_batch_size_sum", ())] == scored
    # Queue wait per review and inference time per batch, measured apart.
    assert values[("sentiment_queue_wait_seconds_count", ())] == scored
    assert values[("sentiment_inference_seconds_count", ())] == batches
    assert values[("sentiment_inference_seconds_sum", ())] > 0
    assert values[("sentiment_queue_depth", ())] == 0
    assert values[("sentiment_estimated_review_seconds", ())] > 0
    assert values[("sentiment_model_info", (("name", "imdb-lstm"), ("version", "1")))] == 1
    # A private registry: the process, GC and heap figures are there, the default one's not.
    assert values[("process_resident_memory_bytes", ())] > 0
    assert values[("python_heap_allocated_blocks", ())] > 0
    assert ("python_gc_collections_total", (("generation", "0"),)) in values
    assert "python_info" not in text
