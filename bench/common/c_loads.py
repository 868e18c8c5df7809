"""Loads from outside Python: h2load (nghttp2's C load generator) sending gRPC unary Predict
calls, and a one-at-a-time HTTP client for POST /predict.

h2load knows HTTP/2, not gRPC: each call is a POST of one length-prefixed
PredictRequest (1 byte "not compressed", 4 bytes big-endian length, the
message) with content-type application/grpc and te: trailers. It counts HTTP
statuses only, and gRPC puts its status in the trailers, so one call of the
same body is checked first with nghttp, whose verbose output shows them.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

from imdb_sentiment_client.bench import percentile
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2

PREDICT_PATH = "/sentiment.v1.SentimentService/Predict"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def h2load_available() -> bool:
    return shutil.which("h2load") is not None and shutil.which("nghttp") is not None


def write_grpc_body(review: str, path: Path) -> Path:
    """One gRPC message frame holding PredictRequest(reviews=[review])."""
    message = sentiment_pb2.PredictRequest(reviews=[review]).SerializeToString()
    path.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    return path


def grpc_status(port: int, body: Path, path: str = PREDICT_PATH) -> str:
    """The grpc-status trailer of one call sending `body` to the method at `path`, read from
    nghttp's verbose output."""
    command = ["nghttp", "-v", "-d", str(body)]
    for header in GRPC_HEADERS:
        command += ["-H", header]
    done = subprocess.run(
        command + [f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        errors="replace",  # the verbose output holds the binary response message too
        timeout=30,
    )
    found = re.findall(r"grpc-status: (\d+)", done.stdout)
    return found[-1] if found else f"none (nghttp exit {done.returncode})"


def run_h2load(
    port: int,
    body: Path,
    concurrency: int,
    duration_s: float,
    warm_up_s: float = 1.0,
    path: str = PREDICT_PATH,
    connections: int = 4,
) -> dict:
    """h2load for `duration_s` with `concurrency` calls in flight over up to `connections`
    connections, after `warm_up_s` whose calls it does not count; each call posts `body` to
    `path`."""
    connections = min(connections, concurrency)
    command = [
        "h2load",
        "--duration",  # whole seconds: h2load refuses a fraction ("-D: value error 0.5")
        str(max(1, math.ceil(duration_s))),
        "--warm-up-time",
        f"{warm_up_s:g}",
        "--clients",
        str(connections),
        "--max-concurrent-streams",
        str(max(1, concurrency // connections)),
        "--threads",
        "1",
        "--data",
        str(body),
    ]
    for header in GRPC_HEADERS:
        command += ["--header", header]
    command.append(f"http://127.0.0.1:{port}{path}")
    done = subprocess.run(
        command, capture_output=True, text=True, errors="replace", timeout=duration_s + 60
    )
    return {"concurrency": concurrency, "connections": connections, **parse_h2load(done.stdout)}


def parse_h2load(output: str) -> dict:
    """The figures of h2load's summary: requests/s, counts, HTTP statuses, request times."""
    rate = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", output)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", output)
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    duration = r"\s+([\d.]+)(us|ms|s)"
    times = re.search(r"time for request:" + 3 * duration, output)
    if not (rate and counts and statuses and times):
        raise RuntimeError(f"cannot read h2load's output:\n{output}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        "rpc_per_s": float(rate.group(3)),
        "requests": int(counts.group(1)),
        "succeeded": int(counts.group(3)),
        "http_2xx": int(statuses.group(1)),
        "http_errors": sum(int(statuses.group(i)) for i in (2, 3, 4)),
        "latency_ms": {
            "min": float(times.group(1)) * scale[times.group(2)],
            "max": float(times.group(3)) * scale[times.group(4)],
            "mean": float(times.group(5)) * scale[times.group(6)],
        },
    }


def http_one_at_a_time(port: int, reviews: list[str], duration_s: float) -> dict:
    """POST /predict {"review": ...} on one keep-alive connection, one call after another."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies_ms: list[float] = []
    errors: dict[str, int] = {}
    started_s = time.perf_counter()
    index = 0
    try:
        while time.perf_counter() - started_s < duration_s:
            body = json.dumps({"review": reviews[index % len(reviews)]})
            index += 1
            call_started_s = time.perf_counter()
            connection.request(
                "POST", "/predict", body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            response.read()
            latencies_ms.append(1000 * (time.perf_counter() - call_started_s))
            if response.status != 200:
                errors[str(response.status)] = errors.get(str(response.status), 0) + 1
    finally:
        connection.close()
    elapsed_s = time.perf_counter() - started_s
    ordered = sorted(latencies_ms)
    return {
        "mode": "http",
        "concurrency": 1,
        "elapsed_s": round(elapsed_s, 3),
        "rpcs": len(ordered),
        "reviews": len(ordered),
        "rpc_per_s": round(len(ordered) / elapsed_s, 2),
        "reviews_per_s": round(len(ordered) / elapsed_s, 2),
        "latency_ms": {
            name: round(percentile(ordered, fraction), 3)
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "errors": errors,
        "error_count": sum(errors.values()),
    }
