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
        "measured": float(f"{measured:.4g}"),
        "required": float(f"{required:.4g}"),
        "comparison": "<=" if at_most else ">=",
        "passed": passed,
        "detail": detail,
    }


def limit_at(points: list[dict], batch_size: float, key: str = "reviews_per_s") -> float:
    """In-process reviews/s (or another figure of the points) at `batch_size`, linear between
    the measured batch sizes."""
    points = sorted(points, key=lambda p: p["batch_size"])
    if batch_size <= points[0]["batch_size"]:
        return points[0][key]
    for low, high in zip(points, points[1:], strict=False):
        if batch_size <= high["batch_size"]:
            share = (batch_size - low["batch_size"]) / (high["batch_size"] - low["batch_size"])
            return low[key] + share * (high[key] - low[key])
    return points[-1][key]


def grpcio_ceiling(points: list[dict], batch_size: float, bare: dict, cpus: int) -> float:
    """The most of the in-process rate at `batch_size` that a server answering single-review
    calls could reach if grpcio's own work per call (a bare server's CPU per call, and the
    load generator's, on the same cores) were all it added: each answer then costs the model's
    CPU per review plus that, and the cores are all there is. Ignores every other cost (the
    GIL, the queue, the event loop's waits), so a real server stays below it."""
    rate = limit_at(points, batch_size)
    model_us = limit_at(points, batch_size, key="cpu_us_per_review")
    call_us = model_us + bare["server_cpu_us_per_call"] + bare["client_cpu_us_per_call"]
    return min(1.0, cpus * 1e6 / call_us / rate)


def path_checks(section: dict, max_batch_size: int) -> list[dict]:
    """Issue 15, item 1, for one version: the fast path's limit and batch-1 latency against
    the plain Keras path's, measured side by side."""
    from bench.paths import ratio_by_round

    fast_points, keras_points = section["sweep"]["fast"], section["sweep"]["keras"]
    fast, plain = best(fast_points, max_batch_size), best(keras_points, max_batch_size)
    by_round = ratio_by_round(
        fast, next(p for p in keras_points if p["batch_size"] == fast["batch_size"])
    )
    latency = section["batch_1_latency"]
    version = section["version"]
    return [
        verdict(
            f"version {version}: fast path limit vs Keras path (x)",
            _ratio(fast["reviews_per_s"], plain["reviews_per_s"]),
            3.0,
            False,
            f"{fast['reviews_per_s']:.0f}/s at batch {fast['batch_size']} vs "
            f"{plain['reviews_per_s']:.0f}/s at batch {plain['batch_size']} (best up to "
            f"{max_batch_size}); at batch {fast['batch_size']}, round by round "
            f"{by_round['min']:.2f}-{by_round['max']:.2f}x",
        ),
        verdict(
            f"version {version}: fast path batch-1 p50 vs Keras path (x)",
            _ratio(latency["fast"]["p50"], latency["keras"]["p50"]),
            0.5,
            True,
            f"{latency['fast']['p50']:.2f} ms vs {latency['keras']['p50']:.2f} ms, one call "
            f"per review over {latency['fast']['reviews']} reviews, the paths in turns",
        ),
    ]


def protocol_door_checks(doors: dict) -> list[dict]:
    """Issue 28, item 5: each Open Inference Protocol door against its native twin, measured
    in turns by the same tool: >= 90% of its calls/s at c=64, p50 within 0.3 ms at c=1."""
    checks = []
    for row in doors["rows"]:
        if not row["protocol"] or row["concurrency"] not in (1, 64):
            continue
        (twin,) = [
            r
            for r in doors["rows"]
            if not r["protocol"]
            and (r["transport"], r["concurrency"]) == (row["transport"], row["concurrency"])
        ]
        tool = row["tool"] or "not measured: the load tool is missing"
        if row["concurrency"] == 64:
            name = f"{row['door']} c=64 vs {twin['door']} (fraction of calls/s)"
            if row["calls_per_s"] is None or twin["calls_per_s"] is None:
                checks.append(verdict(name, 0.0, 0.90, False, tool))
                continue
            checks.append(
                verdict(
                    name,
                    _ratio(row["calls_per_s"], twin["calls_per_s"]),
                    0.90,
                    False,
                    f"{row['calls_per_s']:.0f} vs {twin['calls_per_s']:.0f} calls/s ({tool}, "
                    f"one review a call, median of {doors['rounds']} rounds in turns)",
                )
            )
        else:
            name = f"{row['door']} c=1 p50 minus {twin['door']}'s (ms)"
            checks.append(
                verdict(
                    name,
                    row["p50_ms"] - twin["p50_ms"],
                    0.3,
                    True,
                    f"{row['p50_ms']:.2f} vs {twin['p50_ms']:.2f} ms ({tool}, one call at a time)",
                )
            )
    return checks


def judge(results: dict, elapsed_s: float) -> list[dict]:
    """Every acceptance check, issue 15's first, then the earlier ones, in order."""
    on, off = results["batching_on"], results["batching_off"]
    c64, off64 = unary_at(on, 64), unary_at(off, 64)
    flask = results["seed_flask"]
    limit = results["limit"]["best"]
    max_batch_size = results["limit"]["max_batch_size"]
    multi = results["many_reviews"]["predict_x32"]
    stream = results["many_reviews"]["stream"]
    c1 = unary_at(on, 1)
    # What a server with no overhead at all could reach: the limit at the biggest batch
    # 64 callers can form, over the limit at batch 1 or the seed's Flask.
    ceiling = best(results["limit"]["points"], min(64, max_batch_size))
    batch_1 = results["limit"]["batch_1"]
    ceiling_text = f"in-process ceiling {ceiling['reviews_per_s']:.0f}/s at batch " + str(
        ceiling["batch_size"]
    )
    batch_1_latency = results["limit"]["batch_1_latency"]
    batch1_p50_ms = batch_1_latency["latency_ms"]["p50"]
    limit_text = f"in-process limit {limit['reviews_per_s']:.0f}/s at batch {limit['batch_size']}"
    paths = results["paths"]
    agreement = paths["agreement"]
    checks = path_checks(paths, max_batch_size)
    if paths.get("reference"):
        checks += path_checks(paths["reference"], max_batch_size)
    checks.append(
        verdict(
            "fast vs Keras path: largest score difference",
            agreement["max_abs_score_diff"],
            1e-4,
            True,
            f"over {agreement['reviews']} test reviews; test accuracy "
            f"{agreement['accuracy_fast']:.4f} (fast) vs {agreement['accuracy_keras']:.4f} (Keras)",
        )
    )
    http = on["http"]
    for name, run in (("gRPC unary", c1), ("HTTP", http)):
        checks.append(
            verdict(
                f"{name} c=1 p50 latency (ms)",
                run["latency_ms"]["p50"],
                batch1_p50_ms + 1.0,
                True,
                f"in-process batch-1 p50 {batch1_p50_ms:.2f} ms over the first "
                f"{batch_1_latency['batches']} sample reviews + 1 ms",
            )
        )
    points = results["limit"]["points"]
    for name, run in (("Python client", c64), ("h2load", on.get("h2load"))):
        if run is None:
            checks.append(
                verdict(
                    f"unary c=64 ({name}) vs in-process at its mean batch (fraction)",
                    0.0,
                    0.85,
                    False,
                    "not measured: h2load is missing (apt-get install nghttp2-client)",
                )
            )
            continue
        in_process = limit_at(points, run["mean_batch_size"])
        checks.append(
            verdict(
                f"unary c=64 ({name}) vs in-process at its mean batch (fraction)",
                _ratio(run["reviews_per_s"], in_process),
                0.85,
                False,
                f"{run['reviews_per_s']:.0f}/s, mean batch {run['mean_batch_size']:g}; "
                f"in-process {in_process:.0f}/s at that batch size",
            )
        )
        bare = run.get("bare_grpc")
        if bare is not None:
            cpus = results["meta"]["machine"]["cpus"]
            checks.append(
                verdict(
                    f"unary c=64 ({name}): the most any grpcio server could reach at "
                    f"batch {run['mean_batch_size']:g} here (fraction)",
                    grpcio_ceiling(points, run["mean_batch_size"], bare, cpus),
                    0.85,
                    False,
                    f"a bare grpcio server (no model) costs {bare['server_cpu_us_per_call']:.0f} "
                    f"us CPU a call and h2load {bare['client_cpu_us_per_call']:.0f}; the model "
                    f"{limit_at(points, run['mean_batch_size'], 'cpu_us_per_review'):.0f} us a "
                    f"review at that batch; {cpus} cores",
                )
            )
    reference = on["reference"]
    ref64, ref1 = unary_at(reference, 64), unary_at(reference, 1)
    checks += [
        verdict(
            f"unary c=64 vs version {reference['version']} on the Keras path (x)",
            _ratio(c64["reviews_per_s"], ref64["reviews_per_s"]),
            2.4,
            False,
            f"{c64['reviews_per_s']:.0f}/s vs {ref64['reviews_per_s']:.0f}/s (a server with "
            "--device cpu-keras, measured in turns with this one)",
        ),
        verdict(
            f"unary c=1 p50 vs version {reference['version']} on the Keras path (x)",
            _ratio(c1["latency_ms"]["p50"], ref1["latency_ms"]["p50"]),
            0.6,
            True,
            f"{c1['latency_ms']['p50']:.2f} ms vs {ref1['latency_ms']['p50']:.2f} ms",
        ),
    ]
    if "protocol_doors" in results:
        checks += protocol_door_checks(results["protocol_doors"])
    for row in results.get("doors", {}).get("acceptance", []):
        operator, bound = row["bar"].split()
        checks.append(
            verdict(
                f"--workers: {row['check']}",
                row["measured"],
                float(bound),
                operator == "<=",
                "bench/doors.py: medians of rounds in turns",
            )
        )
    return checks + [
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
            "whole run (s)",
            elapsed_s,
            MAX_RUN_S,
            True,
            "wall time of this run, start to report",
        ),
    ]
