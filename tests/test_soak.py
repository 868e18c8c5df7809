"""The soak's short version end to end (a real server subprocess on the tiny model), and the
tally's bookkeeping: a loss or a surprise must fail the soak."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from bench.common.soak_load import MIX, Mix, Tally
from bench.soak import FULL, LONG, QUICK, Plan, build_report, write_plot
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_full_soak_is_at_least_100000_requests_at_concurrency_128_within_10_minutes():
    assert FULL.requests >= 100_000 and FULL.concurrency >= 128
    assert FULL.max_duration_s <= 600


def test_the_long_soak_is_1000000_requests_read_every_50000_and_flat_over_its_second_half():
    assert LONG.requests >= 1_000_000 and LONG.concurrency >= 128
    assert LONG.sample_every <= 50_000 and LONG.max_second_half_growth_mib <= 5


def test_quick_soak_against_the_tiny_model_loses_nothing_and_reports_everything(
    tiny_model_dir, tmp_path
):
    report_path = tmp_path / "soak.json"
    command = [sys.executable, "-m", "bench.soak", "--quick", "--model-dir", str(tiny_model_dir)]
    command += ["--json-out", str(report_path), "--work-dir", str(tmp_path / "work")]
    finished = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400, check=False
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr[-3000:]
    report = json.loads(report_path.read_text())

    assert report["lost"] == 0 and report["unexpected"] == 0, report["examples"]
    assert report["requests_sent"] == QUICK.requests == report["requests_planned"]
    assert report["concurrency"] >= 128
    # Every kind of the mix ran, and ended as that kind should.
    for kind in MIX:
        assert report["by_kind"][kind]["sent"] > 0, kind
    assert report["by_kind"]["bad_input"]["outcomes"] == {
        "INVALID_ARGUMENT": report["by_kind"]["bad_input"]["sent"]
    }
    assert {"INVALID_ARGUMENT", "CANCELLED", "DEADLINE_EXCEEDED"} <= set(report["errors"])
    accounted = report["results"] + sum(report["errors"].values()) + report["lost"]
    assert accounted == report["requests_sent"]
    streamed = report["stream_reviews"]
    assert sum(streamed["outcomes"].values()) == streamed["sent"] > 0
    assert streamed["outcomes"]["OK"] > 0 and streamed["outcomes"]["INVALID_ARGUMENT"] > 0
    rss = report["server_rss_mib"]
    assert set(rss) == {"start", "after_warm_up", "peak", "end"}
    assert 0 < rss["start"] <= rss["peak"] and rss["end"] <= rss["peak"]
    assert report["rss_growth_after_warm_up_mib"] < 50
    assert report["server_exit_code"] == 0
    assert "lost            0" in finished.stdout and "PASS" in finished.stdout
    # The cycle collector's full passes while serving, read from the server's /metrics.
    passes = report["gc_full_passes"]
    assert set(passes) == {"count", "total_ms", "longest_ms"}
    assert 0 <= passes["longest_ms"] <= passes["total_ms"]
    assert "full GC passes" in finished.stdout
    # The memory curve: a reading every 500 requests, RSS and the Python heap's blocks.
    curve = report["memory_curve"]
    assert [point["requests"] for point in curve] == list(range(500, 3_001, 500))
    assert all(point["rss_mib"] > 0 and point["heap_blocks"] > 0 for point in curve)
    write_plot(report, tmp_path / "memory.svg")
    assert (tmp_path / "memory.svg").read_text().lstrip().startswith("<?xml")


def test_one_kind_alone_draws_only_that_kind():
    mix = Mix(["a fine film"], max_review_bytes=100, max_reviews=4, weights={"stream": 1})
    rng = random.Random(0)
    assert {mix.draw(rng) for _ in range(200)} == {"stream"}
    everything = Mix(["a fine film"], max_review_bytes=100, max_reviews=4)
    assert {everything.draw(rng) for _ in range(2_000)} == set(MIX)


SMALL = Plan(10, 2, 60)


def _report(tally: Tally, plan: Plan = SMALL, curve=None, **rss_mib: float) -> dict:
    rss = {"start": 500.0, "after_warm_up": 510.0, "peak": 520.0, "end": 515.0, **rss_mib}
    rss_bytes = {name: value * 1024 * 1024 for name, value in rss.items()}
    return build_report(plan, tally, 1.0, False, rss_bytes, 0, Path("m"), curve)


def test_an_incomplete_result_counts_as_lost_and_fails_the_soak():
    tally = Tally()
    for _ in range(10):
        tally.sent["multi"] += 1
    mix = Mix(["a fine film"], max_review_bytes=100, max_reviews=4)
    prediction = sentiment_pb2.Prediction(label=sentiment_pb2.POSITIVE, score=0.9)
    for _ in range(9):
        mix._check_predictions("multi", [prediction, prediction], 2, tally)
    mix._check_predictions("multi", [prediction], 2, tally)  # one prediction short
    report = _report(tally)
    assert report["lost"] == 1 and not report["passed"]
    assert "1 requests lost" in report["failures"]


def test_a_request_with_no_recorded_end_is_lost_and_surprises_fail_the_soak():
    tally = Tally()
    tally.sent["single"] += 3
    tally.record("single", "OK")
    tally.record("single", "INTERNAL", "boom")  # not an answer a valid review may get
    report = _report(tally)
    assert report["lost"] == 1  # the third was sent and never ended
    assert (
        report["unexpected"] == 1
        and "unexpected: single ended INTERNAL boom" in (report["examples"])
    )
    assert not report["passed"]


def test_rss_growth_after_warm_up_of_50_mib_fails_the_soak():
    tally = Tally()
    tally.sent["single"] += 10
    for _ in range(10):
        tally.record("single", "OK")
    assert _report(tally)["passed"]
    grown = _report(tally, end=560.0, peak=560.0)
    assert grown["rss_growth_after_warm_up_mib"] == 50.0 and not grown["passed"]


def _all_ok(requests: int) -> Tally:
    tally = Tally()
    tally.sent["single"] += requests
    for _ in range(requests):
        tally.record("single", "OK")
    return tally


def _curve(*rss_mib: float) -> list[dict]:
    """A reading every 2 requests."""
    return [
        {"requests": 2 * (n + 1), "rss_mib": rss, "heap_blocks": 1000}
        for n, rss in enumerate(rss_mib)
    ]


def test_rss_still_growing_over_the_second_half_of_the_long_plan_fails_it():
    tally = _all_ok(10)
    plan = Plan(10, 2, 60, sample_every=2, max_second_half_growth_mib=5)

    levelled = _report(tally, plan, _curve(500, 512, 514, 515, 516))
    assert levelled["rss_growth_second_half_mib"] == 2 and levelled["passed"]
    growing = _report(tally, plan, _curve(500, 505, 508, 511, 514))  # 3 MiB a reading, steady
    assert growing["rss_growth_second_half_mib"] == 6 and not growing["passed"]
    assert "RSS grew 6.0 MiB over the second half (limit 5)" in growing["failures"]
    unread = _report(tally, plan, [])
    assert not unread["passed"]  # no curve, no proof


def test_one_low_reading_in_the_second_half_neither_hides_nor_fakes_growth():
    tally = _all_ok(20)
    plan = Plan(20, 2, 60, sample_every=2, max_second_half_growth_mib=5)

    # Flat, but the half-way reading caught a front on its way out: end minus start says 18.
    dipped = _report(tally, plan, _curve(515, 515, 515, 515, 497, 515, 515, 515, 515, 515))
    assert dipped["rss_growth_second_half_mib"] == 0 and dipped["passed"]
    # Growing 2 MiB a reading, with the same dip: still growth, and still a failure.
    leaking = _report(tally, plan, _curve(500, 502, 504, 506, 490, 510, 512, 514, 516, 518))
    assert leaking["rss_growth_second_half_mib"] == 10 and not leaking["passed"]
