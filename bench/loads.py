"""The gRPC measurements: single-review unary with micro-batching on and off, taken in turns,
then Predict x32 and StreamPredict, and the server's memory."""

from __future__ import annotations

import time

from bench.bare_grpc import measure_bare_grpc
from bench.common.c_loads import (
    grpc_status,
    h2load_available,
    http_one_at_a_time,
    run_h2load,
    write_grpc_body,
)
from bench.common.context import Context, say
from bench.common.server_proc import (
    PeakRss,
    ServerProcess,
    free_port,
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
    run on one then the other, with the reference server (the reference version on the plain
    Keras path) taking its turn at some concurrencies; then HTTP one call at a time, h2load,
    the many-reviews loads and memory of the first."""
    plan = ctx.plan
    settings = {"batching_on": {}, "batching_off": {"max_batch_size": 1}}
    reference_settings = {"model_dir": ctx.reference_dir, "device": "cpu-keras"}
    say(
        "servers: batching on (the defaults), off (max_batch_size=1), and version "
        f"{ctx.reference_version} on the Keras path (the reference)"
    )
    logs = {ctx.work_dir / f"server-{name}.log": dict(s) for name, s in settings.items()}
    logs[ctx.work_dir / "server-batching_on.log"]["http_port"] = free_port()
    logs[ctx.work_dir / "server-reference.log"] = reference_settings
    with start_servers(ctx.model_dir, logs) as (on, off, keras_reference):
        on.name, off.name, keras_reference.name = "on", "off", "reference"
        idle = on.memory_bytes()
        for server in (on, off, keras_reference):
            warm_up(ctx, server)
        unary: dict[str, list[dict]] = {"on": [], "off": [], "reference": []}
        with PeakRss(on.process.pid) as peak:
            for concurrency in plan.concurrencies:
                servers = [on, off]
                if concurrency in plan.reference_concurrencies:
                    servers.append(keras_reference)
                for server in servers:
                    run = load(ctx, server, plan.load_s, mode="unary", concurrency=concurrency)
                    unary[server.name].append(run)
            http = measure_http(ctx, on)
            c_load = measure_h2load(ctx, on)
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
        "http": http,
        "h2load": c_load,
    }
    batching_off = {
        "name": "batching_off",
        "settings": settings["batching_off"],
        "unary": unary["off"],
    }
    batching_on["reference"] = {
        "name": "reference",
        "version": ctx.reference_version,
        "settings": {"device": "cpu-keras"},
        "unary": unary["reference"],
    }
    return batching_on, batching_off


def measure_http(ctx: Context, server: ServerProcess) -> dict:
    """POST /predict one call at a time, with the batch size the server formed."""
    before = server.counters()
    started_s = time.perf_counter()
    run = http_one_at_a_time(server.settings["http_port"], ctx.reviews, ctx.plan.load_s)
    wall_s = time.perf_counter() - started_s
    after = server.counters()
    run["mean_batch_size"] = round(mean_batch_size(before, after), 2)
    run["model_busy"] = round(model_busy_fraction(before, after, wall_s), 3)
    say(
        f"  on http c=1: {run['reviews_per_s']:.0f} reviews/s, p50 {run['latency_ms']['p50']:.2f}"
        f" ms, errors {run['error_count']}"
    )
    return run


def measure_h2load(ctx: Context, server: ServerProcess) -> dict | None:
    """h2load's single-review unary calls (one review near the sample's mean length, every
    call), after one call of the same body has shown grpc-status 0."""
    if not h2load_available():
        say("  h2load or nghttp not found (Debian package nghttp2-client): no C load generator")
        return None
    words = [len(review.split()) for review in ctx.reviews]
    mean_words = sum(words) / len(words)
    review = min(ctx.reviews, key=lambda r: abs(len(r.split()) - mean_words))
    body = write_grpc_body(review, ctx.work_dir / "predict-request.grpc")
    status = grpc_status(server.port, body)
    if status != "0":
        raise RuntimeError(f"a gRPC call with h2load's body got grpc-status {status}, not 0")
    before = server.counters()
    started_s = time.perf_counter()
    run = run_h2load(server.port, body, ctx.plan.c_load_concurrency, ctx.plan.load_s)
    wall_s = time.perf_counter() - started_s
    after = server.counters()
    run.update(
        review_words=len(review.split()),
        grpc_status_of_sample=status,
        reviews_per_s=run["rpc_per_s"],
        mean_batch_size=round(mean_batch_size(before, after), 2),
        model_busy=round(model_busy_fraction(before, after, wall_s), 3),
    )
    say(
        f"  on h2load c={run['concurrency']}: {run['rpc_per_s']:.0f} calls/s, mean "
        f"{run['latency_ms']['mean']:.1f} ms, mean batch {run['mean_batch_size']}, "
        f"HTTP errors {run['http_errors']}"
    )
    # The same load on a server with nothing behind grpcio: what the framework itself costs.
    run["bare_grpc"] = bare = measure_bare_grpc(body, run["concurrency"], ctx.plan.load_s)
    say(
        f"  bare grpcio server, h2load c={bare['concurrency']}: {bare['rpc_per_s']:.0f} "
        f"calls/s, {bare['server_cpu_us_per_call']:.0f} us server CPU a call, h2load "
        f"{bare['client_cpu_us_per_call']:.0f} us"
    )
    return run
