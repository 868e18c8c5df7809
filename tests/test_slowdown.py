"""The slowdown bench's short version end to end (a bench.common.slow_server subprocess on the tiny
model, turned 10x slower mid-load and back), and the report's arithmetic on made-up calls.

The end-to-end test asserts behaviour, not the bars (refusals under 10 ms, recovery within
2 s): on a busy CI machine those are for `make slowdown` to report, not for a test to flake on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.slowdown import QUICK, Call, Plan, build_report

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_quick_slowdown_refuses_at_once_instead_of_timing_out_and_recovers(
    tiny_model_dir, tmp_path
):
    report_path = tmp_path / "slowdown.json"
    command = [sys.executable, "-m", "bench.slowdown", "--quick"]
    command += ["--model-dir", str(tiny_model_dir), "--json-out", str(report_path)]
    command += ["--work-dir", str(tmp_path / "work")]
    finished = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400, check=False
    )
    assert report_path.is_file(), finished.stdout + finished.stderr[-3000:]
    report = json.loads(report_path.read_text())
    normal, slowdown, recovery = (report["phases"][p] for p in ("normal", "slowdown", "recovery"))

    # Normal load is not refused: the model keeps up.
    assert normal["codes"].get("OK", 0) >= 0.9 * normal["calls"] > 0, report["phases"]
    # The slowdown is refused at once, with the retry hint, rather than left to time out.
    refused = slowdown["codes"].get("RESOURCE_EXHAUSTED", 0)
    timed_out = slowdown["codes"].get("DEADLINE_EXCEEDED", 0)
    assert refused > 2 * timed_out, slowdown
    assert refused >= 0.1 * slowdown["calls"], slowdown  # the slowed model serves about 55%
    assert slowdown["refused_with_retry_hint"] == refused
    assert slowdown["refused_would_miss_deadline"] == refused  # the queue never filled
    assert slowdown["codes"].get("OK", 0) > 0  # what it admitted, it scored
    assert slowdown["refused_ms"]["p50"] < 1000 * QUICK.deadline_s / 4
    assert report["server_dropped"]["would_miss_deadline"] >= refused
    # After the slowdown, calls succeed again.
    tail = report["recovery_second_half_codes"]
    assert tail.get("OK", 0) >= 0.9 * sum(tail.values()) > 0, tail
    assert recovery["codes"].get("OK", 0) > 0
    assert report["server_exit_code"] == 0
    for line in ("refusal_p99_under_10_ms", "recovery_within_2_s", "slowdown_deadline_exceeded"):
        assert line in finished.stdout


PLAN = Plan(rate_per_s=20, deadline_s=2.0, warm_up_s=1, normal_s=2, slowdown_s=2, recovery_s=2)


def _calls(start_s: float, end_s: float, code: str, latency_s: float, hint=None) -> list[Call]:
    count = round((end_s - start_s) * PLAN.rate_per_s)
    return [Call(start_s + i / PLAN.rate_per_s, latency_s, code, "", hint) for i in range(count)]


def test_the_report_counts_each_phase_and_times_the_recovery_from_its_windows():
    calls = [
        *_calls(0, 3, "OK", 0.010),
        *_calls(3, 5, "RESOURCE_EXHAUSTED", 0.002, hint=50),
        Call(4.5, 2.0, "DEADLINE_EXCEEDED", "", None),
        *_calls(5, 5.8, "OK", 0.5),  # the backlog drains
        *_calls(5.8, 7, "OK", 0.010),
    ]
    report = build_report(calls, PLAN, deadline_admission=True)

    normal, slowdown = report["phases"]["normal"], report["phases"]["slowdown"]
    assert normal["calls"] == 40  # the warm-up's 20 do not count
    assert slowdown["codes"] == {"RESOURCE_EXHAUSTED": 40, "DEADLINE_EXCEEDED": 1}
    assert slowdown["refused_with_retry_hint"] == 40
    assert report["refused_ms"] == {"p50": 2.0, "p99": 2.0}
    # The first window of only fast calls starts 0.8 s after the slowdown ends.
    assert report["recovery_s"] == 0.8
    assert report["normal_windows_passing"] == 1.0
    bars = report["bars"]
    assert bars["refusal_p99_under_10_ms"]["passed"]
    assert bars["recovery_within_2_s"]["passed"]
    assert not bars["slowdown_deadline_exceeded_at_most_1_percent"]["passed"]  # 1 in 41
    assert not report["passed"]
