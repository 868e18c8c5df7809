"""`make soak`: a long mixed load on a real `sentiment-server` subprocess; nothing may be lost.

    .venv/bin/python -m bench.soak              # 100,000 requests at concurrency 128
    .venv/bin/python -m bench.soak --quick      # CI's short version (a few thousand)
    .venv/bin/python -m bench.soak --long --plot-out reports/soak/rss-long.svg   # 1,000,000
    .venv/bin/python -m bench.soak --model-dir models/imdb-lstm --json-out soak.json
    .venv/bin/python -m bench.soak --only cancelled --requests 150000   # one kind alone

The load (bench.common.soak_load) mixes valid single- and multi-review calls, streams,
bad inputs, client cancellations and too-short deadlines, over loopback only.
The report counts requests sent, results, each error code and lost requests,
and reads the server's RSS at start, after warm-up, at its peak and at the end.
It passes when nothing is lost or unexpected, RSS grew under 50 MiB after
warm-up, every request ran within the time bound and the server drained to exit 0.
Every `sample_every` requests it also records the server's RSS and the blocks the
Python allocator holds (from its /metrics): the curve that tells a leak, which keeps
growing, from a heap that levels off, and a Python leak from a native one. The long
plan also requires the curve to be flat (under 5 MiB) over its second half.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common.server_proc import PeakRss, ServerProcess
from bench.common.soak_load import MIX, Mix, Tally, run_load, synthetic_reviews
from server.config import DEFAULT_MODEL_DIR, ServerConfig

MIB = 1024 * 1024
MAX_RSS_GROWTH_MIB = 50
WARM_UP_FRACTION = 0.1  # RSS after this share of the requests is the baseline for growth
CHANNELS = 4


@dataclass(frozen=True)
class Plan:
    requests: int
    concurrency: int
    max_duration_s: float  # of the load; start-up and drain come on top
    sample_every: int = 10_000  # requests between memory readings
    # RSS may grow at most this much over the second half of the run; None: not checked.
    max_second_half_growth_mib: float | None = None


FULL = Plan(requests=100_000, concurrency=128, max_duration_s=540)
QUICK = Plan(requests=3_000, concurrency=128, max_duration_s=120, sample_every=500)
LONG = Plan(
    requests=1_000_000,
    concurrency=128,
    max_duration_s=4 * 3600,
    sample_every=50_000,
    max_second_half_growth_mib=5,
)
HEAP_BLOCKS = "python_heap_allocated_blocks"
MALLOC_GAUGES = {
    "process_malloc_in_use_bytes": "malloc_in_use_mib",
    "process_malloc_free_bytes": "malloc_free_mib",
}


def say(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


def mib(value_bytes: float) -> float:
    return round(value_bytes / MIB, 1)


def build_report(
    plan: Plan,
    tally: Tally,
    elapsed_s: float,
    cut_short: bool,
    rss: dict[str, float],
    exit_code: int,
    model_dir: Path,
    curve: list[dict] | None = None,
) -> dict:
    codes = tally.codes()
    lost = tally.lost + max(tally.unaccounted, 0)
    sent = sum(tally.sent.values())
    report = {
        "requests_planned": plan.requests,
        "requests_sent": sent,
        "results": codes.get("OK", 0),
        "errors": {code: n for code, n in sorted(codes.items()) if code != "OK"},
        "lost": lost,
        "unexpected": tally.unexpected,
        "examples": tally.examples,
        "by_kind": {
            kind: {"sent": tally.sent[kind], "outcomes": dict(tally.by_kind.get(kind, {}))}
            for kind in MIX
        },
        "stream_reviews": {
            "sent": tally.stream_reviews_sent,
            "outcomes": dict(tally.stream_reviews),
        },
        "concurrency": plan.concurrency,
        "elapsed_s": round(elapsed_s, 1),
        "requests_per_s": round(sent / elapsed_s, 1) if elapsed_s else 0.0,
        "time_bound_s": plan.max_duration_s,
        "cut_short_by_time_bound": cut_short,
        "server_rss_mib": {name: mib(value) for name, value in rss.items()},
        "rss_growth_after_warm_up_mib": mib(rss["end"] - rss["after_warm_up"]),
        "server_exit_code": exit_code,
        "model_dir": str(model_dir),
        "memory_curve": curve or [],
    }
    second_half = second_half_growth_mib(report["memory_curve"], plan.requests)
    report["rss_growth_second_half_mib"] = second_half
    failures = []
    if lost:
        failures.append(f"{lost} requests lost")
    if tally.unexpected:
        failures.append(f"{tally.unexpected} unexpected outcomes")
    if report["rss_growth_after_warm_up_mib"] >= MAX_RSS_GROWTH_MIB:
        failures.append(f"RSS grew {report['rss_growth_after_warm_up_mib']} MiB after warm-up")
    limit = plan.max_second_half_growth_mib
    if limit is not None and (second_half is None or second_half >= limit):
        failures.append(f"RSS grew {second_half} MiB over the second half (limit {limit})")
    if cut_short or sent < plan.requests:
        failures.append(f"only {sent} of {plan.requests} requests ran within the time bound")
    if exit_code != 0:
        failures.append(f"the server exited {exit_code} after SIGTERM")
    report["failures"] = failures
    report["passed"] = not failures
    return report


def second_half_growth_mib(curve: list[dict], requests: int) -> float | None:
    """How much RSS grows over the readings from half-way on: the median of the slopes between
    every two of them (Theil-Sen) times the span they cover. A leak moves every reading; one
    reading taken while a recycled front and its successor overlap, or just after one left,
    is a point off the line, and must not decide the figure as it would as an end point."""
    second_half = [point for point in curve if point["requests"] >= requests // 2]
    if len(second_half) < 2:
        return None
    slope = statistics.median(
        (later["rss_mib"] - earlier["rss_mib"]) / (later["requests"] - earlier["requests"])
        for earlier, later in itertools.combinations(second_half, 2)
    )
    span = second_half[-1]["requests"] - second_half[0]["requests"]
    return round(float(slope * span), 1)


def format_report(report: dict) -> str:
    rss = report["server_rss_mib"]
    failures = report["failures"]
    lines = [
        f"requests sent   {report['requests_sent']:,} of {report['requests_planned']:,} "
        f"at concurrency {report['concurrency']} in {report['elapsed_s']} s "
        f"({report['requests_per_s']} req/s)",
        f"results         {report['results']:,}",
        "errors          "
        + (", ".join(f"{code} {n:,}" for code, n in report["errors"].items()) or "none"),
        f"lost            {report['lost']}",
        f"unexpected      {report['unexpected']}",
        f"stream reviews  {report['stream_reviews']['sent']:,} sent: "
        + ", ".join(f"{c} {n:,}" for c, n in sorted(report["stream_reviews"]["outcomes"].items())),
        f"server RSS MiB  start {rss['start']}, after warm-up {rss['after_warm_up']}, "
        f"peak {rss['peak']}, end {rss['end']} "
        f"(growth after warm-up {report['rss_growth_after_warm_up_mib']})",
        f"second half     RSS growth {report['rss_growth_second_half_mib']} MiB",
        f"server exit     {report['server_exit_code']}",
        "full GC passes  {count} while serving, {total_ms} ms in all, "
        "longest {longest_ms} ms".format(**report["gc_full_passes"]),
        "verdict         " + ("PASS" if report["passed"] else "FAIL: " + "; ".join(failures)),
    ]
    for kind, numbers in report["by_kind"].items():
        outcomes = ", ".join(f"{c} {n:,}" for c, n in sorted(numbers["outcomes"].items()))
        lines.append(f"  {kind:<15} {numbers['sent']:>7,}  {outcomes}")
    lines.append("memory          requests  RSS MiB  Python heap blocks  malloc in use / free MiB")
    for point in report["memory_curve"]:
        lines.append(
            f"  {point['requests']:>22,}  {point['rss_mib']:>7}  {point['heap_blocks']:>18,}"
            f"  {point.get('malloc_in_use_mib')} / {point.get('malloc_free_mib')}"
        )
    return "\n".join(lines)


def write_plot(report: dict, path: Path) -> None:
    """The memory curve against requests served: RSS above; the Python heap's blocks and
    (on glibc) malloc's free bytes below, the two places where growth can hide."""
    import matplotlib  # the `train` extra; only this report needs it

    matplotlib.use("Agg")
    from matplotlib import pyplot

    curve = report["memory_curve"]
    requests = [point["requests"] for point in curve]
    figure, (rss_axis, heap_axis) = pyplot.subplots(2, 1, figsize=(8, 6), sharex=True)
    rss_axis.plot(requests, [point["rss_mib"] for point in curve], "o-", color="tab:blue")
    rss_axis.set_ylabel("server RSS (MiB)", color="tab:blue")
    if all("malloc_in_use_mib" in point for point in curve):
        in_use_axis = rss_axis.twinx()
        in_use_axis.plot(
            requests, [point["malloc_in_use_mib"] for point in curve], "^-", color="tab:red"
        )
        in_use_axis.set_ylabel("malloc in use (MiB)", color="tab:red")
    rss_axis.set_title(
        f"{report['requests_sent']:,} mixed requests at concurrency {report['concurrency']}: "
        f"RSS growth after warm-up {report['rss_growth_after_warm_up_mib']} MiB, "
        f"over the second half {report['rss_growth_second_half_mib']} MiB",
        fontsize=9,
    )
    heap_axis.plot(
        requests, [point["heap_blocks"] / 1e6 for point in curve], "s--", color="tab:orange"
    )
    heap_axis.set_ylabel("Python heap (million blocks)", color="tab:orange")
    heap_axis.set_xlabel("requests served")
    if all("malloc_free_mib" in point for point in curve):
        free_axis = heap_axis.twinx()
        free_axis.plot(
            requests, [point["malloc_free_mib"] for point in curve], "d:", color="tab:green"
        )
        free_axis.set_ylabel("malloc free, kept (MiB)", color="tab:green")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


def memory_point(server: ServerProcess, requests: int) -> dict:
    """The server's RSS, Python heap blocks and (glibc) malloc bytes, after `requests`."""
    rss = server.memory_bytes()["rss_bytes"]
    found = server.scrape((HEAP_BLOCKS, *MALLOC_GAUGES))
    point = {"requests": requests, "rss_mib": mib(rss), "heap_blocks": int(found[HEAP_BLOCKS])}
    for gauge, key in MALLOC_GAUGES.items():
        if gauge in found:
            point[key] = mib(found[gauge])
    return point


def soak(
    plan: Plan,
    model_dir: Path,
    work_dir: Path,
    seed: int,
    reviews: list[str],
    weights: dict[str, int] | None = None,
    server_settings: dict | None = None,
) -> dict:
    defaults = ServerConfig()
    settings = {"log_level": "WARNING", **(server_settings or {})}
    server = ServerProcess(model_dir, work_dir / "server.log", settings)
    try:
        server.wait_until_serving()
        rss = {"start": float(server.memory_bytes()["rss_bytes"])}
        say(f"server up on {server.target}, RSS {mib(rss['start'])} MiB; {plan}")
        mix = Mix(reviews, defaults.max_review_bytes, defaults.max_reviews_per_request, weights)
        warm_up_at = max(1, int(plan.requests * WARM_UP_FRACTION))
        curve: list[dict] = []

        def on_progress(done: int, tally: Tally) -> None:
            if done == warm_up_at:
                rss["after_warm_up"] = float(server.memory_bytes()["rss_bytes"])
            if done % plan.sample_every == 0:
                point = memory_point(server, done)
                curve.append(point)
                say(
                    f"{done:,} done, lost {tally.lost}, RSS {point['rss_mib']} MiB, "
                    f"{point['heap_blocks']:,} Python heap blocks, malloc in use "
                    f"{point.get('malloc_in_use_mib')} MiB, free {point.get('malloc_free_mib')} MiB"
                )

        with PeakRss(server.process.pid) as peak:
            tally, elapsed_s, cut_short = asyncio.run(
                run_load(
                    [server.target] * CHANNELS,
                    mix,
                    requests=plan.requests,
                    concurrency=plan.concurrency,
                    seed=seed,
                    max_duration_s=plan.max_duration_s,
                    on_progress=on_progress,
                )
            )
        time.sleep(1)  # let cancelled calls' clean-up finish before the last reading
        rss["end"] = float(server.memory_bytes()["rss_bytes"])
        full_passes = full_collections(server)
        rss.setdefault("after_warm_up", rss["end"])
        rss["peak"] = float(max(peak.peak_bytes, rss["end"]))
    finally:
        exit_code = server.stop()
    report = build_report(plan, tally, elapsed_s, cut_short, rss, exit_code, model_dir, curve)
    report["gc_full_passes"] = full_passes
    return report


def full_collections(server: ServerProcess) -> dict:
    """The cycle collector's full passes while serving: how many, their summed and longest
    pause (each one stops the event loop; --gc-freeze keeps them short)."""
    found = {
        sample.name: sample.value
        for sample in server.samples()
        if sample.name.startswith("python_gc_pause") and sample.labels.get("generation") == "2"
    }
    return {
        "count": int(found.get("python_gc_pause_seconds_count", 0)),
        "total_ms": round(found.get("python_gc_pause_seconds_sum", 0.0) * 1000, 1),
        "longest_ms": round(found.get("python_gc_pause_longest_seconds", 0.0) * 1000, 1),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true", help=f"CI's short version: {QUICK}")
    length.add_argument("--long", action="store_true", help=f"the long soak: {LONG}")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--requests", type=int, help="override the plan's request count")
    parser.add_argument("--concurrency", type=int, help="override the plan's concurrency")
    parser.add_argument("--max-duration-s", type=float, help="override the load's time bound")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        choices=sorted(MIX),
        help="send only this kind of request (to tell which kind a memory curve comes from)",
    )
    parser.add_argument("--sample-every", type=int, help="override the requests between readings")
    parser.add_argument("--json-out", type=Path, help="also write the report here as JSON")
    parser.add_argument("--work-dir", type=Path, help="server log goes here (default: a temp dir)")
    parser.add_argument("--plot-out", type=Path, help="draw the memory curve here (SVG or PNG)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="the server's --workers (RSS summed over all, less a recycled front leaving)",
    )
    parser.add_argument(
        "--max-calls-per-worker", type=int, default=0, help="the server's front recycling"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else LONG if args.long else FULL
    plan = dataclasses.replace(
        plan,
        requests=args.requests or plan.requests,
        concurrency=args.concurrency or plan.concurrency,
        max_duration_s=args.max_duration_s or plan.max_duration_s,
        sample_every=args.sample_every or plan.sample_every,
    )
    if min(plan.requests, plan.concurrency, plan.sample_every) < 1 or plan.max_duration_s <= 0:
        print(f"soak: error: the plan must be positive, got {plan}", file=sys.stderr)
        return 2
    if not args.model_dir.is_dir():
        print(f"soak: error: --model-dir {args.model_dir} is not a directory", file=sys.stderr)
        return 2
    reviews = synthetic_reviews(args.seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as temp:
        work_dir = args.work_dir or Path(temp)
        work_dir.mkdir(parents=True, exist_ok=True)
        weights = {args.only: 1} if args.only else None
        server_settings = {
            "workers": args.workers,
            "max_calls_per_worker": args.max_calls_per_worker,
        }
        report = soak(plan, args.model_dir, work_dir, args.seed, reviews, weights, server_settings)
    print(format_report(report))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot_out:
        write_plot(report, args.plot_out)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
