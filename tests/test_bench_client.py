"""Tests for the load generator (imdb_sentiment_client.bench) and `sentiment-client bench`."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from imdb_sentiment_client.bench import BenchConfig, load_reviews, percentile, run_bench
from imdb_sentiment_client.cli import main
from imdb_sentiment_client.errors import UnavailableError
from tests.fake_sentiment_service import FakeSentimentService, closed_port, serve


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"mode": "bidi"}, "mode"),
        ({"concurrency": 0}, "concurrency"),
        ({"procs": 3, "concurrency": 2}, "procs \\(3\\) must not exceed concurrency \\(2\\)"),
        ({"requests": 0}, "requests"),
        ({"duration_s": -1.0}, "duration_s"),
        ({"reviews_per_request": 0}, "reviews_per_request"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, named):
    with pytest.raises(ValueError, match=named):
        BenchConfig("127.0.0.1:1", **kwargs)


def test_run_length_defaults_to_10_s_and_is_always_bounded():
    assert BenchConfig("t:1").run_s == 10.0
    assert BenchConfig("t:1", requests=5, max_duration_s=30).run_s == 30
    assert BenchConfig("t:1", duration_s=900, max_duration_s=60).run_s == 60


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0


def test_load_reviews_skips_blank_lines_and_refuses_an_empty_file(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("one\n\n  \ntwo\n")
    assert load_reviews(str(path)) == ["one", "two"]
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no reviews"):
        load_reviews(str(path))


def _check_latencies(result: dict) -> None:
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


@pytest.mark.parametrize(
    "mode, requests, reviews",
    [("unary", 30, 30), ("multi", 10, 40), ("stream", 100, 100)],
)
def test_counted_run_makes_exactly_the_requests_asked(grpc_server, mode, requests, reviews):
    config = BenchConfig(
        grpc_server, mode=mode, concurrency=4, requests=requests, reviews_per_request=4
    )
    result = run_bench(config)
    assert (result["rpcs"], result["reviews"], result["errors"]) == (requests, reviews, {})
    elapsed_s = result["elapsed_s"]  # rounded to 0.1 ms, the rate is not
    assert reviews / (elapsed_s + 1e-4) <= result["reviews_per_s"] <= reviews / (elapsed_s - 1e-4)
    _check_latencies(result)


def test_several_processes_split_the_work(grpc_server, tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("a great film\nan awful film\nboring plot\n")
    config = BenchConfig(
        grpc_server, mode="stream", concurrency=4, procs=2, requests=61, input_path=str(path)
    )
    result = run_bench(config)
    assert result["reviews"] == 61
    assert result["config"]["procs"] == 2
    _check_latencies(result)


def test_timed_run_stops_near_its_duration(grpc_server):
    started = time.monotonic()
    result = run_bench(BenchConfig(grpc_server, mode="unary", concurrency=2, duration_s=0.5))
    assert 0.4 <= result["elapsed_s"] < 3
    assert time.monotonic() - started < 5
    assert result["rpcs"] > 0


def test_failures_are_counted_by_status_code_not_retried():
    service = FakeSentimentService(
        fail_first=[grpc.StatusCode.RESOURCE_EXHAUSTED] * 2 + [grpc.StatusCode.UNAVAILABLE]
    )
    with serve(service) as target:
        result = run_bench(BenchConfig(target, concurrency=1, requests=10))
    assert result["errors"] == {"RESOURCE_EXHAUSTED": 2, "UNAVAILABLE": 1}
    assert result["error_count"] == 3
    assert result["rpcs"] == 7
    assert service.predict_calls == 10


def test_unreachable_target_raises_unavailable():
    config = BenchConfig(f"127.0.0.1:{closed_port()}", requests=1, timeout_s=0.5)
    with pytest.raises(UnavailableError, match="could not connect"):
        run_bench(config)


def test_cli_bench_prints_json_or_a_report(grpc_server, capsys):
    argv = ["--target", grpc_server, "bench", "--mode", "multi", "--requests", "5"]
    assert main([*argv, "--json", "--reviews-per-request", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["rpcs"], result["reviews"]) == (5, 15)
    assert "token" not in result["config"]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "reviews/s" in report and "p99" in report and "errors      none" in report


def test_cli_bench_usage_error(capsys):
    assert main(["bench", "--procs", "4", "--concurrency", "2"]) == 2
    assert "procs (4) must not exceed concurrency (2)" in capsys.readouterr().err
