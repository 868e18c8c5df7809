"""Tests for the benchmark (bench/): one quick end-to-end run checked for shape, plus its parts.

Never a timing: the quick run's figures are meaningless on a shared CI machine;
only the report's completeness and the properties that hold at any speed
(batching off forms batches of 1, padding leaves scores unchanged) are checked.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import acceptance, report
from bench.common.plan import QUICK
from bench.common.server_proc import mean_batch_size, model_busy_fraction, read_memory_bytes
from bench.limit import batch_sizes_up_to, best
from bench.run import OUTPUT_FILES
from bench.tuning import choose, merge_rounds
from tests.imdb_fixture import make_aclimdb

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tiny_model_dir, tmp_path_factory) -> Path:
    """`python -m bench.run --quick` against the tiny model and a made-up aclImdb; its out dir."""
    root = tmp_path_factory.mktemp("bench")
    data = make_aclimdb(root / "data", per_class=QUICK.sample_size // 2)
    out = root / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--model-dir", str(tiny_model_dir)]
        + ["--data", str(data), "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def results(quick_run) -> dict:
    return json.loads((quick_run / "results.json").read_text())


def test_quick_run_writes_every_output_file(quick_run):
    for name in OUTPUT_FILES:
        assert (quick_run / name).stat().st_size > 0, name
    for name in ("throughput.png", "p99_latency.png"):
        assert (quick_run / name).read_bytes().startswith(PNG_MAGIC), name


def test_results_hold_every_section(results):
    for key in ("meta", "limit", "paths", "padding", "batching_on", "batching_off"):
        assert key in results
    for key in ("many_reviews", "seed_flask", "memory", "tuning", "acceptance"):
        assert key in results
    assert results["meta"]["quick"] is True
    assert results["meta"]["data"]["reviews"] == QUICK.sample_size
    model = results["meta"]["model"]
    assert (model["version"], model["preset"], model["scoring_path"]) == (1, "tiny", "fast")


def test_the_paths_are_measured_side_by_side_and_agree(results):
    paths = results["paths"]
    assert set(paths["sweep"]) == {"fast", "fast_1_lane", "keras"}
    sizes = [p["batch_size"] for p in results["limit"]["points"]]
    for points in paths["sweep"].values():
        assert [p["batch_size"] for p in points] == sizes
        for p in points:
            assert len(p["reviews_per_s_by_round"]) == QUICK.paths_rounds
            assert p["reviews_per_s_min"] <= p["reviews_per_s"] <= p["reviews_per_s_max"]
    assert set(paths["batch_1_latency"]) == {"fast", "keras"}
    agreement = paths["agreement"]
    assert agreement["reviews"] == QUICK.agreement_reviews
    assert agreement["max_abs_score_diff"] <= 1e-4
    assert agreement["accuracy_fast"] == agreement["accuracy_keras"]
    # The tiny model directory has no version 2: the served version is its own reference.
    assert paths["reference"] is None
    assert results["batching_on"]["reference"]["version"] == 1


def test_http_and_the_c_load_generator_ran_without_errors(results):
    http = results["batching_on"]["http"]
    assert http["error_count"] == 0 and http["reviews"] > 0
    c_load = results["batching_on"]["h2load"]
    if c_load is None:
        pytest.skip("h2load is not installed (Debian package nghttp2-client)")
    assert c_load["grpc_status_of_sample"] == "0"
    assert c_load["succeeded"] > 0 and c_load["http_errors"] == 0
    assert c_load["mean_batch_size"] >= 1
    bare = c_load["bare_grpc"]
    assert bare["grpc_status_of_sample"] == "0"
    assert bare["succeeded"] > 0 and bare["http_errors"] == 0
    assert bare["server_cpu_us_per_call"] > 0 and bare["client_cpu_us_per_call"] > 0


def test_the_limit_records_the_cpu_time_per_review(results):
    for point in results["limit"]["points"]:
        assert point["cpu_us_per_review"] > 0, point


def test_grpcio_ceiling_adds_the_bare_call_cost_to_the_model_cost_on_all_cores():
    points = [
        {"batch_size": 1, "reviews_per_s": 1000.0, "cpu_us_per_review": 2000.0},
        {"batch_size": 32, "reviews_per_s": 4000.0, "cpu_us_per_review": 500.0},
    ]
    bare = {"server_cpu_us_per_call": 300.0, "client_cpu_us_per_call": 40.0}
    # 2 cores / (500 + 300 + 40 us) = 2381 calls/s against 4000/s in process.
    assert acceptance.grpcio_ceiling(points, 32, bare, cpus=2) == pytest.approx(2e6 / 840 / 4000)
    assert acceptance.grpcio_ceiling(points, 1, bare, cpus=2) == pytest.approx(2e6 / 2340 / 1000)
    free = {"server_cpu_us_per_call": 0.0, "client_cpu_us_per_call": 0.0}
    assert acceptance.grpcio_ceiling(points, 32, free, cpus=8) == 1.0


def test_limit_covers_batch_sizes_up_to_the_largest_tried(results):
    limit = results["limit"]
    largest = max(
        [results["meta"]["server_defaults"]["max_batch_size"]]
        + [size for size, _ in QUICK.tuning_candidates]
    )
    assert [p["batch_size"] for p in limit["points"]] == batch_sizes_up_to(largest)
    assert all(p["reviews_per_s"] > 0 for p in limit["points"])
    assert limit["batch_1"]["batch_size"] == 1
    # The c=1 check's reference: one call per review, each of the sample's first reviews once.
    assert limit["batch_1_latency"]["batch_size"] == 1
    assert limit["batch_1_latency"]["batches"] == QUICK.latency_reviews
    assert limit["best"]["batch_size"] <= limit["max_batch_size"]


def test_every_load_ran_without_errors(results):
    runs = [
        *results["batching_on"]["unary"],
        *results["batching_off"]["unary"],
        *results["many_reviews"].values(),
        results["seed_flask"],
    ]
    for run in runs:
        assert run["error_count"] == 0, run
        assert run["reviews"] > 0 and run["reviews_per_s"] > 0, run
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], run
    for name in ("batching_on", "batching_off"):
        concurrencies = [run["concurrency"] for run in results[name]["unary"]]
        assert concurrencies == list(QUICK.concurrencies)


def test_batching_off_forms_batches_of_one_and_predict_x32_forms_bigger_ones(results):
    assert all(run["mean_batch_size"] == 1.0 for run in results["batching_off"]["unary"])
    # Each Predict call queues its 32 reviews at once, so batches hold more than one review.
    assert results["many_reviews"]["predict_x32"]["mean_batch_size"] > 1.0


def test_padding_to_maxlen_changes_no_score(results):
    padding = results["padding"]
    assert padding["max_abs_score_diff"] <= 1e-5
    assert padding["tokens_max"] <= padding["maxlen"]
    for variant in ("as_served", "padded_to_longest", "padded_to_maxlen"):
        assert padding[variant]["reviews_per_s"] > 0, variant
    grouping = padding["grouping"]
    assert grouping["reviews"] == QUICK.sample_size
    assert (
        grouping["as_served"]["reviews_per_s"] > 0 < grouping["padded_to_longest"]["reviews_per_s"]
    )


def test_memory_is_read_from_the_server_process(results):
    memory = results["memory"]
    assert memory["idle_rss_bytes"] > 10 * 1024 * 1024  # a Python process with TensorFlow
    assert memory["lifetime_peak_rss_bytes"] >= memory["idle_rss_bytes"]
    assert memory["peak_rss_under_load_bytes"] > 0


def test_tuning_tries_every_candidate_and_picks_one_of_them(results):
    tuning = results["tuning"]
    tried = [(c["max_batch_size"], c["max_delay_ms"]) for c in tuning["candidates"]]
    defaults = results["meta"]["server_defaults"]
    assert (defaults["max_batch_size"], defaults["max_delay_ms"]) in tried
    assert set(tried) >= {tuple(pair) for pair in QUICK.tuning_candidates}
    chosen = tuning["chosen"]
    assert (chosen["max_batch_size"], chosen["max_delay_ms"]) in tried
    for candidate in tuning["candidates"]:
        runs = candidate["unary"]
        assert [run["concurrency"] for run in runs] == list(QUICK.tuning_concurrencies)
        assert all(run["rounds"] == QUICK.tuning_rounds and run["reviews"] > 0 for run in runs)


def test_report_names_every_check_with_a_verdict(quick_run, results):
    text = (quick_run / "report.md").read_text()
    assert text.startswith("# Benchmark")
    assert "QUICK SMOKE RUN" in text
    verdicts = results["acceptance"]
    names = [verdict["name"] for verdict in verdicts]
    assert names[:3] == [
        "version 1: fast path limit vs Keras path (x)",
        "version 1: fast path batch-1 p50 vs Keras path (x)",
        "fast vs Keras path: largest score difference",
    ]
    assert "HTTP c=1 p50 latency (ms)" in names and "gRPC unary c=1 p50 latency (ms)" in names
    assert "unary c=64 (h2load) vs in-process at its mean batch (fraction)" in names
    for verdict in verdicts:
        assert isinstance(verdict["passed"], bool)
        assert verdict["name"] in text
    assert text.count("| PASS |") + text.count("| FAIL |") == len(verdicts)
    for heading in ("## Acceptance", "## Scoring paths", "## 1. Limit", "## Tuning"):
        assert heading in text


def test_acceptance_ratio_passes_at_8x_and_fails_below(results):
    changed = copy.deepcopy(results)
    off = acceptance.unary_at(changed["batching_off"], 64)
    on = acceptance.unary_at(changed["batching_on"], 64)
    off["reviews_per_s"] = 100.0
    on["reviews_per_s"] = 800.0
    assert check(changed, "unary c=64 vs batching off (x)")["passed"] is True
    on["reviews_per_s"] = 799.0
    first = check(changed, "unary c=64 vs batching off (x)")
    assert first["passed"] is False and first["measured"] == pytest.approx(7.99)
    assert acceptance.judge(changed, 601.0)[-1]["passed"] is False


def check(results: dict, name: str) -> dict:
    (found,) = [v for v in acceptance.judge(results, 1.0) if v["name"] == name]
    return found


def test_acceptance_latency_checks_allow_1_ms_over_in_process_batch_1(results):
    changed = copy.deepcopy(results)
    changed["limit"]["batch_1_latency"]["latency_ms"]["p50"] = 2.0
    for name, run in (
        ("gRPC unary", acceptance.unary_at(changed["batching_on"], 1)),
        ("HTTP", changed["batching_on"]["http"]),
    ):
        run["latency_ms"]["p50"] = 3.0
        assert check(changed, f"{name} c=1 p50 latency (ms)")["passed"] is True
        run["latency_ms"]["p50"] = 3.1
        assert check(changed, f"{name} c=1 p50 latency (ms)")["passed"] is False
    assert "| FAIL |" in report.acceptance_table(acceptance.judge(changed, 1.0))


def test_the_fast_path_checks_need_3x_the_limit_and_half_the_latency(results):
    changed = copy.deepcopy(results)
    paths = changed["paths"]
    for point in paths["sweep"]["keras"]:
        point["reviews_per_s"] = 100.0
        point["reviews_per_s_by_round"] = [100.0] * len(point["reviews_per_s_by_round"])
    for point in paths["sweep"]["fast"]:
        point["reviews_per_s"] = 300.0
        point["reviews_per_s_by_round"] = [300.0] * len(point["reviews_per_s_by_round"])
    changed["limit"]["points"] = paths["sweep"]["fast"]
    paths["batch_1_latency"]["keras"]["p50"] = 10.0
    paths["batch_1_latency"]["fast"]["p50"] = 5.0
    assert check(changed, "version 1: fast path limit vs Keras path (x)")["passed"] is True
    assert check(changed, "version 1: fast path batch-1 p50 vs Keras path (x)")["passed"] is True
    paths["sweep"]["fast"][-1]["reviews_per_s"] = 299.0
    for point in paths["sweep"]["fast"]:
        point["reviews_per_s"] = 299.0
    assert check(changed, "version 1: fast path limit vs Keras path (x)")["passed"] is False
    paths["batch_1_latency"]["fast"]["p50"] = 5.1
    assert check(changed, "version 1: fast path batch-1 p50 vs Keras path (x)")["passed"] is False


def test_in_process_throughput_at_a_mean_batch_is_read_between_the_measured_sizes():
    points = [{"batch_size": 1, "reviews_per_s": 100.0}, {"batch_size": 8, "reviews_per_s": 800.0}]
    assert acceptance.limit_at(points, 4.5) == pytest.approx(450.0)
    assert acceptance.limit_at(points, 0.5) == 100.0
    assert acceptance.limit_at(points, 64) == 800.0


H2LOAD_OUTPUT = """
finished in 10.01s, 1523.40 req/s, 170.12KB/s
requests: 15234 total, 15298 started, 15234 done, 15230 succeeded, 4 failed, 0 errored, 0 timeout
status codes: 15230 2xx, 0 3xx, 0 4xx, 4 5xx
traffic: 1.66MB (1742076) total, 28.22KB (28897) headers (space savings 94.08%), 1.03MB data
                     min         max         mean         sd        +/- sd
time for request:   812us    120.02ms     41.87ms     10.11ms    71.11%
"""


def test_h2load_summary_is_read():
    from bench.common.c_loads import parse_h2load

    parsed = parse_h2load(H2LOAD_OUTPUT)
    assert parsed["rpc_per_s"] == 1523.4
    assert (parsed["requests"], parsed["succeeded"], parsed["http_errors"]) == (15234, 15230, 4)
    assert parsed["latency_ms"] == {"min": 0.812, "max": 120.02, "mean": 41.87}
    with pytest.raises(RuntimeError, match="cannot read h2load's output"):
        parse_h2load("connect failed")


# -- parts, without servers ---------------------------------------------------------------


def test_the_run_measures_a_snapshot_of_the_newest_version(tmp_path):
    from bench.run import snapshot_model

    source = tmp_path / "models"
    for version in (1, 2, 3):
        (source / str(version)).mkdir(parents=True)
        (source / str(version) / "model.keras").write_text(f"weights {version}")
    for version in (1, 2):  # version 3 is still being written: no metadata.json yet
        (source / str(version) / "metadata.json").write_text("{}")
    snapshot = snapshot_model(source, tmp_path / "snapshot")
    assert sorted(p.name for p in snapshot.iterdir()) == ["2"]
    assert (snapshot / "2" / "model.keras").read_text() == "weights 2"
    (source / "3" / "metadata.json").write_text("{}")  # a newer version lands meanwhile
    assert sorted(p.name for p in snapshot.iterdir()) == ["2"]


def test_a_missing_model_or_data_is_named_before_anything_runs(tiny_model_dir, tmp_path, capsys):
    from bench.run import main

    assert main(["--quick", "--model-dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert f"model directory {tmp_path / 'none'} does not exist" in capsys.readouterr().err
    missing = tmp_path / "no-data.tar.gz"
    argv = ["--quick", "--model-dir", str(tiny_model_dir), "--data", str(missing)]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert f"{missing}: no such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_batch_sizes_double_up_to_and_including_the_largest():
    assert batch_sizes_up_to(1) == [1]
    assert batch_sizes_up_to(32) == [1, 2, 4, 8, 16, 32]
    assert batch_sizes_up_to(48) == [1, 2, 4, 8, 16, 32, 48]


def test_the_limit_keeps_the_fastest_round_of_each_batch_size():
    from bench.limit import measure_limit

    calls: list[int] = []

    def predict(batch: list[str]) -> list[float]:
        calls.append(len(batch))
        if calls.count(2) <= 4:  # the first round at batch size 2, as if the machine were busy
            time.sleep(0.01)
        return [0.5] * len(batch)

    points = measure_limit(predict, ["a", "b", "c"], [1, 2], duration_s=0.0, rounds=2)
    assert [p["batch_size"] for p in points] == [1, 2]
    assert all(p["rounds"] == 2 for p in points)
    # Swept up, then down: 1, 2, 2, 1 (each one warm-up call, then three timed ones).
    assert calls == [1] * 4 + [2] * 4 + [2] * 4 + [1] * 4
    assert points[1]["latency_ms"]["max"] < 5  # the slowed round did not count


def test_best_limit_ignores_batch_sizes_above_the_server_maximum():
    points = [{"batch_size": n, "reviews_per_s": float(n)} for n in (1, 8, 32, 64)]
    assert best(points, 32)["batch_size"] == 32
    with pytest.raises(ValueError, match="batch size <= 0"):
        best(points, 0)


def _candidate(size: int, reviews_per_s: float, p99_ms: float) -> dict:
    run = {"concurrency": 256, "reviews_per_s": reviews_per_s, "latency_ms": {"p99": p99_ms}}
    low = {"concurrency": 64, "reviews_per_s": 1.0, "latency_ms": {"p99": 1.0}}
    return {"max_batch_size": size, "max_delay_ms": 5.0, "unary": [low, run]}


def test_tuning_prefers_the_lower_tail_among_near_equal_throughputs():
    candidates = [_candidate(32, 520, 300), _candidate(64, 530, 500), _candidate(128, 540, 900)]
    # 520 and 530 are within 5% of 540: the lowest p99 of those three wins.
    assert choose(candidates) == {"max_batch_size": 32, "max_delay_ms": 5.0}
    candidates[0] = _candidate(32, 400, 300)  # now too slow to be considered
    assert choose(candidates) == {"max_batch_size": 64, "max_delay_ms": 5.0}


def test_rounds_merge_into_one_load():
    def run(reviews: int, elapsed_s: float, p99_ms: float, errors: dict) -> dict:
        return {
            "mode": "unary",
            "concurrency": 64,
            "elapsed_s": elapsed_s,
            "rpcs": reviews,
            "reviews": reviews,
            "errors": errors,
            "latency_ms": {"p50": 1.0, "p99": p99_ms},
            "mean_batch_size": 10.0,
            "model_busy": 0.5,
        }

    merged = merge_rounds([run(300, 1.0, 10.0, {}), run(100, 1.0, 30.0, {"UNAVAILABLE": 2})])
    assert merged["reviews_per_s"] == 200.0  # 400 reviews in 2 s, not the mean of the rates
    assert merged["latency_ms"] == {"p50": 1.0, "p99": 20.0}
    assert (merged["errors"], merged["error_count"], merged["rounds"]) == ({"UNAVAILABLE": 2}, 2, 2)


def test_mean_batch_size_is_reviews_over_batches_between_readings():
    before = {"sentiment_batches_total": 10, "sentiment_reviews_scored_total": 100}
    after = {"sentiment_batches_total": 14, "sentiment_reviews_scored_total": 180}
    assert mean_batch_size(before, after) == 20.0
    assert mean_batch_size(after, after) == 0.0


def test_model_busy_is_inference_time_over_wall_time():
    before = {"sentiment_inference_seconds_sum": 1.0}
    after = {"sentiment_inference_seconds_sum": 2.5}
    assert model_busy_fraction(before, after, wall_s=2.0) == 0.75


def test_memory_of_this_process_is_read_from_proc():
    memory = read_memory_bytes(os.getpid())
    assert 0 < memory["rss_bytes"] <= memory["peak_rss_bytes"]


def test_padded_scores_equal_the_served_scores(serving_model):
    from bench.padding import PaddedTo, max_score_difference, shortest

    reviews = ["a great film", "awful, boring and dull", "the plot was moving and superb indeed"]
    for to_maxlen in (False, True):
        padded = PaddedTo(serving_model, to_maxlen)
        assert len(padded(reviews)) == 3
        assert max_score_difference(serving_model, padded, reviews, batch_size=2) <= 1e-5
    assert shortest(reviews, fraction=0.34, at_least=1) == ["a great film"]


def test_seed_app_answers_like_the_seed(tiny_model_dir):
    from bench.common.seed_app import create_app

    client = create_app(tiny_model_dir).test_client()
    answer = client.post("/predict", json={"review": "a great and wonderful film"})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["sentiment"] in ("Positive", "Negative")
    assert 0.0 <= body["score"] <= 1.0
    assert (body["sentiment"] == "Positive") == (body["score"] >= 0.5)
    assert client.post("/predict", json={"text": "wrong key"}).status_code == 400
