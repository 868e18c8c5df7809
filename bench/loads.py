"""The gRPC measurements: single-review unary with micro-batching on and off, taken in turns,
then Predict x32 and StreamPredict, and the server's memory."""

from __future__ import annotations

import time

from bench.context import Context, say
from bench.server_proc import (
    PeakRss,
    ServerProcess,
    mean_batch_size,
    model_busy_fraction,
    start_servers,
)
from imdb_sentiment_client.bench import BenchConfig, run_bench


def load(ctx: Context, server: ServerProcess, duration_s: float, **settings) -> dict:
    """One run_bench load against `server`, with the batch size and model busy share it showed."""
    concurrency = settings["concurrency"]
    config = BenchConfig(
        server.target,
        duration_s=duration_s,
        input_path=str(ctx.input_path),
        procs=min(ctx.procs, concurrency),
        timeout_s=30.0,
        **settings,
    )
    before = server.counters()
    started_s = time.perf_counter()
    result = run_bench(config)
    wall_s = time.perf_counter() - started_s
    after = server.counters()
    entry = {
        "mode": config.mode,
        "concurrency": concurrency,
        "procs": config.procs,
        **{key: result[key] for key in ("elapsed_s", "rpcs", "reviews", "rpc_per_s")},
        **{key: result[key] for key in ("reviews_per_s", "latency_ms", "errors", "error_count")},
        "mean_batch_size": round(mean_batch_size(before, after), 2),
        "model_busy": round(model_busy_fraction(before, after, wall_s), 3),
    }
    if config.mode == "multi":
        entry["reviews_per_request"] = config.reviews_per_request
    if config.mode == "stream":
        entry["stream_window"] = config.stream_window
    say(
        f"  {server.name} {config.mode} c={concurrency}: {entry['reviews_per_s']:.0f} reviews/s, "
        f"p50 {entry['latency_ms']['p50']:.1f} ms, p99 {entry['latency_ms']['p99']:.1f} ms, "
        f"mean batch {entry['mean_batch_size']}, model busy {entry['model_busy']:.0%}, "
        f"errors {entry['error_count']}"
    )
    return entry


def warm_up(ctx: Context, server: ServerProcess) -> None:
    """Unrecorded load of mixed batch sizes, so no measurement pays for first calls at new
    shapes (TensorFlow and oneDNN prepare kernels per shape on first use)."""
    config = BenchConfig(
        server.target,
        mode="multi",
        concurrency=4,
        reviews_per_request=ctx.plan.reviews_per_request,
        duration_s=ctx.plan.warm_up_s,
        input_path=str(ctx.input_path),
        timeout_s=30.0,
    )
    result = run_bench(config)
    if result["error_count"]:
        raise RuntimeError(f"warming up {server.name} failed: {result['errors']}")


def measure_batching(ctx: Context) -> tuple[dict, dict]:
    """(batching on, batching off): the server's defaults vs max_batch_size=1, each unary load
    run on one then the other; then the many-reviews loads and memory of the first."""
    plan = ctx.plan
    settings = {"batching_on": {}, "batching_off": {"max_batch_size": 1}}
    say("servers: batching on (the defaults) and off (max_batch_size=1)")
    logs = {ctx.work_dir / f"server-{name}.log": s for name, s in settings.items()}
    with start_servers(ctx.model_dir, logs) as (on, off):
        on.name, off.name = "on", "off"
        idle = on.memory_bytes()
        for server in (on, off):
            warm_up(ctx, server)
        unary: dict[str, list[dict]] = {"on": [], "off": []}
        with PeakRss(on.process.pid) as peak:
            for concurrency in plan.concurrencies:
                for server in (on, off):
                    run = load(ctx, server, plan.load_s, mode="unary", concurrency=concurrency)
                    unary[server.name].append(run)
            many = {
                "predict_x32": load(
                    ctx,
                    on,
                    plan.load_s,
                    mode="multi",
                    concurrency=plan.multi_concurrency,
                    reviews_per_request=plan.reviews_per_request,
                ),
                "stream": load(
                    ctx,
                    on,
                    plan.load_s,
                    mode="stream",
                    concurrency=plan.streams,
                    stream_window=plan.stream_window,
                ),
            }
        memory = {
            "idle_rss_bytes": idle["rss_bytes"],
            "peak_rss_under_load_bytes": peak.peak_bytes,
            "lifetime_peak_rss_bytes": on.memory_bytes()["peak_rss_bytes"],
        }
    batching_on = {
        "name": "batching_on",
        "settings": settings["batching_on"],
        "unary": unary["on"],
        "memory": memory,
        "many_reviews": many,
    }
    batching_off = {
        "name": "batching_off",
        "settings": settings["batching_off"],
        "unary": unary["off"],
    }
    return batching_on, batching_off
