"""The issue's acceptance checks from one run's results: measured, required, pass or fail."""

from __future__ import annotations

from bench.limit import best

# The run's own wall time limit for the full plan (the quick plan is never judged on time).
MAX_RUN_S = 600.0


def unary_at(section: dict, concurrency: int) -> dict:
    for run in section["unary"]:
        if run["concurrency"] == concurrency:
            return run
    raise KeyError(f"no unary run at concurrency {concurrency} in {section['name']}")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


def verdict(name: str, measured: float, required: float, at_most: bool, detail: str) -> dict:
    passed = measured <= required if at_most else measured >= required
    return {
        "name": name,
        "measured": round(measured, 3),
        "required": round(required, 3),
        "comparison": "<=" if at_most else ">=",
        "passed": passed,
        "detail": detail,
    }


def judge(results: dict, elapsed_s: float) -> list[dict]:
    """Every acceptance check of the issue, in its order."""
    on, off = results["batching_on"], results["batching_off"]
    c64, off64 = unary_at(on, 64), unary_at(off, 64)
    flask = results["seed_flask"]
    limit = results["limit"]["best"]
    multi = results["many_reviews"]["predict_x32"]
    stream = results["many_reviews"]["stream"]
    c1 = unary_at(on, 1)
    # What a server with no overhead at all could reach: the limit at the biggest batch
    # 64 callers can form, over the limit at batch 1 or the seed's Flask.
    ceiling = best(results["limit"]["points"], min(64, results["limit"]["max_batch_size"]))
    batch_1 = results["limit"]["batch_1"]
    ceiling_text = f"in-process ceiling {ceiling['reviews_per_s']:.0f}/s at batch " + str(
        ceiling["batch_size"]
    )
    batch_1_latency = results["limit"]["batch_1_latency"]
    batch1_p50_ms = batch_1_latency["latency_ms"]["p50"]
    limit_text = f"in-process limit {limit['reviews_per_s']:.0f}/s at batch {limit['batch_size']}"
    return [
        verdict(
            "unary c=64 vs batching off (x)",
            _ratio(c64["reviews_per_s"], off64["reviews_per_s"]),
            8.0,
            False,
            f"{c64['reviews_per_s']:.0f}/s vs {off64['reviews_per_s']:.0f}/s; {ceiling_text} is "
            f"{_ratio(ceiling['reviews_per_s'], batch_1['reviews_per_s']):.1f}x batch 1",
        ),
        verdict(
            "unary c=64 vs seed Flask (x)",
            _ratio(c64["reviews_per_s"], flask["reviews_per_s"]),
            80.0,
            False,
            f"{c64['reviews_per_s']:.0f}/s vs {flask['reviews_per_s']:.1f}/s "
            f"(Flask at c={flask['concurrency']}); {ceiling_text} is "
            f"{_ratio(ceiling['reviews_per_s'], flask['reviews_per_s']):.0f}x Flask",
        ),
        verdict(
            "Predict x32 vs in-process limit (fraction)",
            _ratio(multi["reviews_per_s"], limit["reviews_per_s"]),
            0.70,
            False,
            f"{multi['reviews_per_s']:.0f}/s vs {limit_text}",
        ),
        verdict(
            "StreamPredict vs in-process limit (fraction)",
            _ratio(stream["reviews_per_s"], limit["reviews_per_s"]),
            0.60,
            False,
            f"{stream['reviews_per_s']:.0f}/s vs {limit_text}",
        ),
        verdict(
            "unary c=1 p50 latency (ms)",
            c1["latency_ms"]["p50"],
            batch1_p50_ms + 2.0,
            True,
            f"in-process batch-1 p50 {batch1_p50_ms:.2f} ms over the first "
            f"{batch_1_latency['batches']} sample reviews + 2 ms",
        ),
        verdict(
            "whole run (s)",
            elapsed_s,
            MAX_RUN_S,
            True,
            "wall time of this run, start to report",
        ),
    ]
