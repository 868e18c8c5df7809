"""A replica killed, not drained: bench.replica_kill's quick plan on the tiny model (three
replicas, round_robin, 64 callers, SIGKILL, a restart on the same port), and its verdict."""

from __future__ import annotations

from pathlib import Path

from bench.replica_kill import (
    DEADLINE_MARGIN_S,
    QUICK,
    REJOIN_BOUND_S,
    Call,
    Timeline,
    build_report,
    format_report,
    run_kill_test,
)


def test_a_killed_replica_costs_no_call_and_rejoins_when_restarted(tiny_model_dir, tmp_path):
    report = run_kill_test(QUICK, tiny_model_dir, tmp_path)
    summary = format_report(report)
    assert report["passed"], summary
    assert report["plan"]["concurrency"] == 64 and report["retry"]
    # The kill cut calls in flight on that replica; the retry policy sent them to the others.
    assert report["kill"]["in_flight_on_killed_replica"] > 0, summary
    assert report["outcomes"] == {"OK": report["calls"]}, summary
    assert all(phase["calls"] > 0 for phase in report["phases"].values()), summary
    assert report["max_latency_s"] <= report["deadline_s"] + DEADLINE_MARGIN_S, summary
    rejoin = report["rejoin"]
    assert rejoin["serving_to_first_call_s"] <= REJOIN_BOUND_S, summary
    assert rejoin["calls_served_by_restarted_replica"] > 0, summary
    assert report["exit_codes"] == {"killed": -9, "survivors": [0, 0], "restarted": 0}


def _timeline(**changes: object) -> Timeline:
    timeline = Timeline(
        kill_s=10.0,
        restart_s=10.0,
        serving_s=20.0,
        first_call_s=22.0,
        in_flight_on_killed=5,
        calls_served_by_restarted=1,
        exit_codes={"killed": -9, "survivors": [0, 0], "restarted": 0},
    )
    for name, value in changes.items():
        setattr(timeline, name, value)
    return timeline


def _verdict(calls: list[Call], retry: bool = True, **changes: object) -> list[str]:
    report = build_report(QUICK, retry, calls, _timeline(**changes), None, {}, Path("m"))
    assert report["passed"] == (not report["failures"])
    return report["failures"]


def test_the_report_splits_calls_at_the_kill_and_the_rejoin():
    calls = [Call(1.0, 1.1, "OK"), Call(9.5, 10.5, "OK"), Call(15.0, 15.1, "OK")]
    calls += [Call(23.0, 23.2, "OK")]
    report = build_report(QUICK, True, calls, _timeline(), None, {}, Path("m"))
    assert [phase["calls"] for phase in report["phases"].values()] == [2, 1, 1]
    assert report["kill"]["client_calls_in_flight"]["calls"] == 1  # started before, ended after
    assert report["rejoin"]["serving_to_first_call_s"] == 2.0
    assert report["rejoin"]["share_of_ok_calls_after_it_rejoined"] == 1.0
    assert report["passed"], report["failures"]


def test_the_verdict_fails_a_call_past_its_deadline_and_an_unactionable_status():
    late = Call(11.0, 11.0 + QUICK.timeout_s + DEADLINE_MARGIN_S + 0.5, "DEADLINE_EXCEEDED")
    assert any("past their deadline" in f for f in _verdict([late], retry=False))
    assert _verdict([Call(11.0, 11.0 + QUICK.timeout_s, "DEADLINE_EXCEEDED")], retry=False) == []
    assert any("CANCELLED" in f for f in _verdict([Call(11.0, 11.1, "CANCELLED")], retry=False))


def test_the_verdict_fails_any_failed_call_while_retries_are_on():
    unavailable = [Call(11.0, 11.1, "UNAVAILABLE")]
    assert (
        _verdict(unavailable, retry=False) == []
    )  # actionable: what a caller without retries sees
    assert any("retries were on" in f for f in _verdict(unavailable, retry=True))


def test_the_verdict_fails_a_replica_that_does_not_rejoin_in_time_or_a_bad_exit():
    ok = [Call(1.0, 1.1, "OK")]
    assert any("never served" in f for f in _verdict(ok, first_call_s=None))
    late = 20.0 + REJOIN_BOUND_S + 1
    assert any("over the" in f for f in _verdict(ok, first_call_s=late))
    bad_exit = {"killed": -9, "survivors": [0, 1], "restarted": 0}
    assert any("exit 0" in f for f in _verdict(ok, exit_codes=bad_exit))
