"""The doors side by side: gRPC and HTTP calls/s of one server process against --workers.

    .venv/bin/python -m bench.doors                 # part of make bench; alone: make bench-doors
    .venv/bin/python -m bench.doors --quick         # seconds, figures meaningless

One review (the sample's nearest to 141 words) a call. gRPC `Predict` from h2load
(4 connections x 16 streams for 64 in flight), HTTP `POST /predict` from wrk (64
connections); c=1 p50 from a one-call-at-a-time Python client on each door. Variants,
all running at once and measured in turns, round after round, so a drift in the
machine's load favours none:
- `one process, asyncio`: --workers 1 --event-loop asyncio, the server as it was (one
  event loop, one GIL): the baseline of the bars;
- `one process, uvloop`: --workers 1 --event-loop uvloop: what the loop alone changes
  (auto keeps one process on asyncio's);
- `fronts + model process`: --workers 2, two front processes over one model process;
- `fronts + model process, asyncio`: the same on asyncio's own event loop, beside it;
- `two whole servers`: two --workers 1 servers sharing the ports (--reuse-port), each
  with its own model and batcher (the other design: on a GPU, two copies of the model).
Then the same doors with a model that costs almost nothing (the tests' tiny model), for
one process as it was and 2 fronts: what the doors alone can carry here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import grpc

from bench.common.c_loads import http_one_at_a_time, run_h2load, write_grpc_body
from bench.common.context import say
from bench.common.reviews import data_path, sample_test_reviews
from bench.common.server_proc import ServerProcess, descendants, free_port
from imdb_sentiment_client.bench import percentile
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.config import DEFAULT_MODEL_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "reports" / "bench" / "doors.json"
TARGET_WORDS = 141
CONCURRENCY = 64
FULL = {"rounds": 3, "load_s": 10, "c1_s": 4, "warm_up": True, "tiny": True}
# CI's smoke run: every door once, briefly; no warm-up pass, no tiny-model part (the quick
# run's model is the tiny one already).
QUICK = {"rounds": 1, "load_s": 1, "c1_s": 0.5, "warm_up": False, "tiny": False}
TOOLS = ("h2load", "wrk")

# The server as it was when --workers came: the baseline of the section's bars.
BASELINE = "one process, asyncio"
VARIANTS = {
    BASELINE: [{"workers": 1, "event_loop": "asyncio"}],
    "one process, uvloop": [{"workers": 1, "event_loop": "uvloop"}],
    "fronts + model process": [{"workers": 2}],
    "fronts + model process, asyncio": [{"workers": 2, "event_loop": "asyncio"}],
    "two whole servers": [{"workers": 1, "reuse_port": True}] * 2,
}


def pick_review(reviews: list[str]) -> str:
    return min(reviews, key=lambda r: abs(len(r.split()) - TARGET_WORDS))


def run_wrk(port: int, review: str, connections: int, duration_s: float, work: Path) -> dict:
    """wrk POSTing {"review": ...} to /predict over `connections` keep-alive connections."""
    script = work / "post.lua"
    body = json.dumps({"review": review})
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    whole_s = max(1, math.ceil(duration_s))  # wrk refuses a fraction of a second
    done = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{whole_s}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/predict"],
        capture_output=True, text=True, timeout=duration_s + 60,
    )  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if not rate:
        raise RuntimeError(f"cannot read wrk's output:\n{done.stdout}{done.stderr}")
    return {
        "concurrency": connections,
        "rpc_per_s": float(rate.group(1)),
        "http_errors": int(errors.group(1)) if errors else 0,
    }


def grpc_one_at_a_time(port: int, review: str, duration_s: float) -> dict:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        request = sentiment_pb2.PredictRequest(reviews=[review])
        latencies_ms = []
        started_s = time.perf_counter()
        while time.perf_counter() - started_s < duration_s:
            call_started_s = time.perf_counter()
            stub.Predict(request, timeout=10)
            latencies_ms.append(1000 * (time.perf_counter() - call_started_s))
    latencies_ms.sort()
    return {"calls": len(latencies_ms), "p50_ms": round(percentile(latencies_ms, 0.5), 3)}


def connections_per_process(port: int) -> list[int]:
    """How many established TCP connections to `port` each process holds, most first (ss);
    [] without ss. SO_REUSEPORT hands each new connection to one listener by a hash of its
    addresses, so h2load's 4 connections can fall 3 and 1, or 4 and 0, on two fronts."""
    if shutil.which("ss") is None:
        return []
    listed = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, timeout=10,
    ).stdout  # fmt: skip
    return sorted(Counter(re.findall(r"pid=(\d+)", listed)).values(), reverse=True)


def cpu_seconds(servers: list[ServerProcess]) -> float:
    """User + system CPU seconds of every process of `servers` so far (the supervisor, fronts,
    model process), from /proc/<pid>/stat; processes that ended meanwhile count nothing."""
    total_ticks = 0
    for server in servers:
        for pid in [server.process.pid, *descendants(server.process.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total_ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return total_ticks / os.sysconf("SC_CLK_TCK")


def measure_variant(servers: list[ServerProcess], review: str, plan: dict, work: Path) -> dict:
    grpc_port, http_port = servers[0].port, servers[0].settings["http_port"]
    body = write_grpc_body(review, work / "body.bin")
    split: list[int] = []
    # Read once h2load's connections are up (after its 1 s warm-up), while its load runs.
    sampler = threading.Timer(1.5, lambda: split.extend(connections_per_process(grpc_port)))
    sampler.start()
    cpu_s, started_s = cpu_seconds(servers), time.monotonic()
    h2 = run_h2load(grpc_port, body, CONCURRENCY, plan["load_s"])
    grpc_cpu_s, grpc_wall_s = cpu_seconds(servers) - cpu_s, time.monotonic() - started_s
    sampler.join()
    if h2["http_errors"] or h2["succeeded"] != h2["requests"]:
        say(f"    h2load saw failures: {h2}")
    cpu_s, started_s = cpu_seconds(servers), time.monotonic()
    http = run_wrk(http_port, review, CONCURRENCY, plan["load_s"], work)
    http_cpu_s, http_wall_s = cpu_seconds(servers) - cpu_s, time.monotonic() - started_s
    grpc_c1 = grpc_one_at_a_time(grpc_port, review, plan["c1_s"])
    http_c1 = http_one_at_a_time(http_port, [review], plan["c1_s"])
    return {
        "grpc_c64": h2["rpc_per_s"],
        "http_c64": http["rpc_per_s"],
        "grpc_c1_p50_ms": grpc_c1["p50_ms"],
        "http_c1_p50_ms": http_c1["latency_ms"]["p50"],
        "errors": h2["http_errors"] + http["http_errors"],
        "grpc_connections_per_process": split,
        # The server's CPU a call, every process summed: the cores it used over the load's
        # wall time (h2load's warm-up second included, at the same rate) over its calls/s.
        "grpc_server_cpu_us": round(1e6 * grpc_cpu_s / grpc_wall_s / h2["rpc_per_s"], 1),
        "http_server_cpu_us": round(1e6 * http_cpu_s / http_wall_s / http["rpc_per_s"], 1),
    }


def start_variant(stack: ExitStack, model_dir: Path, settings_list, work: Path, name: str):
    port, http_port = free_port(), free_port()
    servers = []
    for index, settings in enumerate(settings_list):
        log = work / f"{name.replace(' ', '-')}-{index}.log"
        server = ServerProcess(
            model_dir,
            log,
            {"http_port": http_port, "poll_s": 0, **settings},
            port=port,
        )
        stack.callback(server.stop)
        servers.append(server)
    return servers


def measure(model_dir: Path, review: str, plan: dict, work: Path, variants: dict) -> dict:
    rounds: dict[str, list[dict]] = {name: [] for name in variants}
    with ExitStack() as stack:
        running = {
            name: start_variant(stack, model_dir, settings, work, name)
            for name, settings in variants.items()
        }
        for servers in running.values():
            for server in servers:
                server.wait_until_serving()
        if plan["warm_up"]:
            for servers in running.values():  # warm every door once
                measure_variant(servers, review, {"load_s": 2, "c1_s": 1}, work)
        for number in range(plan["rounds"]):
            order = list(running) if number % 2 == 0 else list(reversed(running))
            for name in order:
                result = measure_variant(running[name], review, plan, work)
                rounds[name].append(result)
                say(f"  round {number + 1} {name}: {result}")
    return {name: summarise(results) for name, results in rounds.items()}


def summarise(results: list[dict]) -> dict:
    summary = {}
    for key in (
        "grpc_c64", "http_c64", "grpc_c1_p50_ms", "http_c1_p50_ms", "grpc_server_cpu_us",
        "http_server_cpu_us",
    ):  # fmt: skip
        values = [r[key] for r in results]
        summary[key] = {
            "median": round(statistics.median(values), 3),
            "min": min(values),
            "max": max(values),
        }
    summary["errors"] = sum(r["errors"] for r in results)
    summary["grpc_connections_per_process"] = [
        "/".join(map(str, r.get("grpc_connections_per_process", []))) for r in results
    ]
    summary["grpc_over_http_c64"] = round(
        statistics.median(r["grpc_c64"] / r["http_c64"] for r in results), 3
    )
    return summary


def tiny_model_dir(work: Path) -> Path:
    """The tests' tiny model (vocabulary 500, 8 units): a batch costs next to nothing."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.conftest import build_tiny_model_version

    model_dir = work / "tiny" / "imdb-lstm"
    build_tiny_model_version(model_dir / "1", version=1)
    return model_dir


def judge(results: dict) -> list[dict]:
    one, fronts = results["served"][BASELINE], results["served"]["fronts + model process"]
    rows = [
        ("gRPC c=64 / HTTP c=64, fronts", fronts["grpc_over_http_c64"], ">= 0.90"),
        (
            "gRPC c=64, fronts / one process as it was (asyncio)",
            round(fronts["grpc_c64"]["median"] / one["grpc_c64"]["median"], 3),
            ">= 1.6",
        ),
        (
            "gRPC c=1 p50, fronts - one process as it was (ms)",
            round(fronts["grpc_c1_p50_ms"]["median"] - one["grpc_c1_p50_ms"]["median"], 3),
            "<= 0.3",
        ),
        (
            "HTTP c=1 p50, fronts - one process as it was (ms)",
            round(fronts["http_c1_p50_ms"]["median"] - one["http_c1_p50_ms"]["median"], 3),
            "<= 0.3",
        ),
    ]
    judged = []
    for check, value, bar in rows:
        op, limit = bar.split()
        passed = value >= float(limit) if op == ">=" else value <= float(limit)
        judged.append({"check": check, "measured": value, "bar": bar, "pass": passed})
    return judged


def markdown(results: dict, checks: bool = True) -> str:
    """The doors table; and the bars unless `checks` is False (make bench's report lists them
    in its own acceptance table)."""
    lines = [
        "| server | gRPC c=64 calls/s | HTTP c=64 calls/s | gRPC/HTTP | gRPC c=1 p50 ms | "
        "HTTP c=1 p50 ms | server CPU µs a call, gRPC / HTTP | h2load's connections per "
        "process, each round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, table in (("served", results["served"]), ("tiny", results.get("tiny", {}))):
        for name, s in table.items():

            def cell(key, s=s):
                v = s[key]
                return f"{v['median']:,.0f} ({v['min']:,.0f}-{v['max']:,.0f})"

            def ms(key, s=s):
                return f"{s[key]['median']:.2f}"

            def cpu(s=s):
                if "grpc_server_cpu_us" not in s:  # a run from before it was measured
                    return "-"
                grpc_us, http_us = s["grpc_server_cpu_us"], s["http_server_cpu_us"]
                return f"{grpc_us['median']:.0f} / {http_us['median']:.0f}"

            label = name if model == "served" else f"{name}, tiny model"
            lines.append(
                f"| {label} | {cell('grpc_c64')} | {cell('http_c64')} | "
                f"{s['grpc_over_http_c64']:.2f} | {ms('grpc_c1_p50_ms')} | "
                f"{ms('http_c1_p50_ms')} | {cpu(s)} | "
                f"{', '.join(s.get('grpc_connections_per_process', [])) or '-'} |"
            )
    if not checks:
        return "\n".join(lines) + "\n"
    lines += ["", "| check | measured | bar | |", "|---|---|---|---|"]
    for row in results["acceptance"]:
        verdict = "PASS" if row["pass"] else "FAIL"
        lines.append(f"| {row['check']} | {row['measured']} | {row['bar']} | {verdict} |")
    return "\n".join(lines) + "\n"


def measure_doors(ctx) -> dict:
    """make bench's section: the doors of each design, on the run's model and reviews."""
    plan = dict(QUICK if ctx.plan.load_s < 5 else FULL)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        say(f"doors: not measured, {' and '.join(missing)} not found (nghttp2-client, wrk)")
        return {}
    review = pick_review(ctx.reviews)
    work = ctx.work_dir / "doors"
    work.mkdir(exist_ok=True)
    say(f"doors: one {len(review.split())}-word review a call, {plan}")
    served = measure(ctx.model_dir, review, plan, work, VARIANTS)
    tiny = {}
    if plan["tiny"]:
        say("doors with the tiny model")
        tiny_variants = {k: VARIANTS[k] for k in (BASELINE, "fronts + model process")}
        tiny = measure(tiny_model_dir(work), review, plan, work, tiny_variants)
    results = {"plan": plan, "review_words": len(review.split()), "served": served, "tiny": tiny}
    results["acceptance"] = judge(results)
    return results


def report_lines(doors: dict | None) -> list[str]:
    if not doors:
        return []
    return [
        "",
        "## The doors across processes (--workers)",
        "",
        f"One {doors['review_words']}-word review a call; medians (min-max) of "
        f"{doors['plan']['rounds']} rounds, the variants in turns (bench/doors.py).",
        "",
        markdown(doors, checks=False),
        "The bars are in the acceptance table at the top (`--workers: ...`).",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.doors", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", help="aclImdb .tar.gz or directory")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rounds", type=int, help="default: 3 (1 with --quick)")
    args = parser.parse_args(argv)
    for tool in TOOLS:
        if shutil.which(tool) is None:
            print(f"bench.doors: {tool} not found (Debian: nghttp2-client, wrk)", file=sys.stderr)
            return 2
    plan = dict(QUICK if args.quick else FULL)
    if args.rounds:
        plan["rounds"] = args.rounds
    sample = sample_test_reviews(data_path(args.data), 200, 0)
    review = pick_review(sample.reviews)
    started_s = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sentiment-doors-") as work:
        work = Path(work)
        say(f"doors: one {len(review.split())}-word review a call, {plan}")
        served = measure(args.model_dir, review, plan, work, VARIANTS)
        tiny = {}
        if plan["tiny"]:
            tiny_variants = {k: VARIANTS[k] for k in (BASELINE, "fronts + model process")}
            say("doors with the tiny model")
            tiny = measure(tiny_model_dir(work), review, plan, work, tiny_variants)
    results = {
        "plan": plan,
        "review_words": len(review.split()),
        "served": served,
        "tiny": tiny,
        "elapsed_s": round(time.monotonic() - started_s, 1),
    }
    results["acceptance"] = judge(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
