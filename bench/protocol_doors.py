"""The Open Inference Protocol's doors beside their native twins (issue 28, item 5).

    .venv/bin/python -m bench.protocol_doors           # alone (make bench-protocol)
    .venv/bin/python -m bench.protocol_doors --quick   # seconds, figures meaningless

Also part of `make bench` (bench.run), in its quick plan too. One server (the run's
model, HTTP on); one review a call, the same review for every door (the sample's
nearest to its mean length): gRPC `ModelInfer` against `Predict`, both from h2load
(ModelInfer's body a serialized ModelInferRequest with the review in
raw_input_contents, as tritonclient and perf_analyzer send it), and
`POST /v2/models/imdb-lstm/infer` against `POST /predict`, both from wrk with a JSON
body. That is at c=64; at c=1 each door is called one call at a time from Python
(blocking gRPC stubs, a keep-alive http.client connection), which gives the p50 the
bar is about. Twins take turns, in alternating order, round after round, so a drift
in the machine's load favours neither. Bars (bench/acceptance.py): at c=64 each
protocol door makes >= 90% of its twin's calls/s; at c=1 its p50 is within 0.3 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.common.c_loads import PREDICT_PATH, grpc_status, h2load_available, run_h2load
from bench.common.context import Context, say
from bench.common.server_proc import ServerProcess, free_port, start_server
from imdb_sentiment_client.bench import percentile
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.api.inference import grpc_predict_v2_pb2 as v2
from server.api.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from server.api.inference_protocol import MODEL_NAME, join_bytes

MODEL_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
CONCURRENCIES = (1, 64)
ROUNDS = 4
# Twins: (transport, native door, protocol door).
PAIRS = (("grpc", "Predict", "ModelInfer"), ("http", "POST /predict", f"POST {INFER_PATH}"))
_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


# -- the requests, the same review in each --------------------------------------------------


def predict_request(review: str) -> sentiment_pb2.PredictRequest:
    return sentiment_pb2.PredictRequest(reviews=[review])


def model_infer_request(review: str) -> v2.ModelInferRequest:
    """One review, shape [1], raw contents: what tritonclient.grpc sends."""
    tensor = v2.ModelInferRequest.InferInputTensor(name="review", datatype="BYTES", shape=[1])
    return v2.ModelInferRequest(
        model_name=MODEL_NAME, inputs=[tensor], raw_input_contents=[join_bytes([review.encode()])]
    )


def http_bodies(review: str) -> dict[str, bytes]:
    infer = {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1], "data": [review]}]}
    return {
        "POST /predict": json.dumps({"review": review}).encode(),
        f"POST {INFER_PATH}": json.dumps(infer).encode(),
    }


def write_grpc_frame(message, path: Path) -> Path:
    """One gRPC message frame: 1 byte "not compressed", 4 bytes big-endian length, message."""
    data = message.SerializeToString()
    path.write_bytes(b"\x00" + len(data).to_bytes(4, "big") + data)
    return path


# -- the loads ------------------------------------------------------------------------------


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(port: int, path: str, body: bytes, connections: int, duration_s: float, work: Path):
    """wrk POSTing `body` (JSON) to `path` over `connections` keep-alive connections."""
    script = work / f"wrk-{abs(hash(path))}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, math.ceil(duration_s))}s"]
    command.append("--latency")  # whole seconds: wrk refuses a fraction
    done = subprocess.run(
        [*command, "-s", str(script), f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
    )
    return {"concurrency": connections, "tool": "wrk", **parse_wrk(done.stdout + done.stderr)}


def parse_wrk(output: str) -> dict:
    """Calls/s, p50 and errors from wrk --latency's summary."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if not (rate and p50):
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    return {
        "calls_per_s": float(rate.group(1)),
        "p50_ms": float(p50.group(1)) * _TIME_UNITS_MS[p50.group(2)],
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(int(n) for n in socket.groups()) if socket else 0),
    }


def h2load_run(port: int, body: Path, path: str, duration_s: float) -> dict:
    run = run_h2load(port, body, 64, duration_s, path=path)
    return {
        "concurrency": 64,
        "tool": "h2load",
        "calls_per_s": run["rpc_per_s"],
        "p50_ms": None,  # h2load reports min, mean and max only
        "mean_ms": run["latency_ms"]["mean"],
        "errors": run["http_errors"] + run["requests"] - run["succeeded"],
    }


def one_at_a_time(call, duration_s: float) -> dict:
    """`call()` again and again for `duration_s`: calls/s and p50 of one caller."""
    latencies_ms, errors = [], 0
    started_s = time.perf_counter()
    while time.perf_counter() - started_s < duration_s:
        call_started_s = time.perf_counter()
        if not call():
            errors += 1
        latencies_ms.append(1000 * (time.perf_counter() - call_started_s))
    elapsed_s = time.perf_counter() - started_s
    latencies_ms.sort()
    return {
        "concurrency": 1,
        "tool": "python",
        "calls_per_s": round(len(latencies_ms) / elapsed_s, 2),
        "p50_ms": round(percentile(latencies_ms, 0.5), 3),
        "errors": errors,
    }


def grpc_caller(channel: grpc.Channel, door: str, review: str):
    if door == "Predict":
        method = sentiment_pb2_grpc.SentimentServiceStub(channel).Predict
        request = predict_request(review)
    else:
        method = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        request = model_infer_request(review)

    def call() -> bool:
        try:
            method(request, timeout=30)
        except grpc.RpcError:
            return False
        return True

    return call


def http_caller(connection: http.client.HTTPConnection, door: str, body: bytes):
    path = door.split(" ", 1)[1]

    def call() -> bool:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status == 200

    return call


# -- the measurement ------------------------------------------------------------------------


def measure_protocol_doors(ctx: Context) -> dict:
    """Every door at c=1 and c=64, twins in turns; a server of its own, HTTP on."""
    review = pick_review(ctx.reviews)
    say(f"protocol doors: one {len(review.split())}-word review a call, {ROUNDS} rounds")
    with start_server(ctx.model_dir, ctx.work_dir / "server-doors.log", http_port=free_port()) as s:
        return measure(s, review, ctx.plan.load_s / 2, ctx.work_dir)


def pick_review(reviews: list[str]) -> str:
    words = [len(review.split()) for review in reviews]
    mean_words = sum(words) / len(words)
    return min(reviews, key=lambda r: abs(len(r.split()) - mean_words))


def measure(server: ServerProcess, review: str, load_s: float, work: Path) -> dict:
    port, http_port = server.port, server.settings["http_port"]
    bodies = {
        "Predict": write_grpc_frame(predict_request(review), work / "doors-predict.grpc"),
        "ModelInfer": write_grpc_frame(model_infer_request(review), work / "doors-infer.grpc"),
    }
    tools = {"grpc": h2load_available(), "http": wrk_available()}
    if tools["grpc"]:
        for door, path in (("Predict", PREDICT_PATH), ("ModelInfer", MODEL_INFER_PATH)):
            status = grpc_status(port, bodies[door], path=path)
            if status != "0":
                raise RuntimeError(f"a {door} call with h2load's body got grpc-status {status}")
    runs: dict[str, list[dict]] = {}
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        _connection(http_port) as connection,
    ):
        callers = {
            **{door: grpc_caller(channel, door, review) for door in ("Predict", "ModelInfer")},
            **{door: http_caller(connection, door, b) for door, b in http_bodies(review).items()},
        }
        for call in callers.values():  # warm every door (and the model at batch 1) once
            one_at_a_time(call, min(1.0, load_s))
        for number in range(ROUNDS):
            for transport, native, protocol in PAIRS:
                order = (native, protocol) if number % 2 == 0 else (protocol, native)
                for door in order:
                    runs.setdefault(f"{door} c=1", []).append(
                        one_at_a_time(callers[door], load_s / 2)
                    )
                for door in order:
                    if not tools[transport]:
                        continue
                    if transport == "grpc":
                        path = PREDICT_PATH if door == "Predict" else MODEL_INFER_PATH
                        run = h2load_run(port, bodies[door], path, load_s)
                    else:
                        body = http_bodies(review)[door]
                        run = run_wrk(http_port, door.split(" ", 1)[1], body, 64, load_s, work)
                    runs.setdefault(f"{door} c=64", []).append(run)
    rows = [
        summarise(transport, door, door != native, concurrency, runs.get(f"{door} c={concurrency}"))
        for transport, native, protocol in PAIRS
        for concurrency in CONCURRENCIES
        for door in (native, protocol)
    ]
    for row in rows:
        say(f"  {row['door']} c={row['concurrency']}: {row}")
    return {"review_words": len(review.split()), "rounds": ROUNDS, "tools": tools, "rows": rows}


def summarise(transport: str, door: str, protocol: bool, concurrency: int, runs) -> dict:
    """One table row: the median of the rounds (None where the tool is missing)."""
    row = {"transport": transport, "door": door, "protocol": protocol, "concurrency": concurrency}
    if not runs:
        return {**row, "tool": None, "calls_per_s": None, "p50_ms": None, "errors": 0}
    p50s = [run["p50_ms"] for run in runs if run["p50_ms"] is not None]
    return {
        **row,
        "tool": runs[0]["tool"],
        "calls_per_s": round(statistics.median(run["calls_per_s"] for run in runs), 1),
        "calls_per_s_by_round": [run["calls_per_s"] for run in runs],
        "p50_ms": round(statistics.median(p50s), 3) if p50s else None,
        "errors": sum(run["errors"] for run in runs),
    }


def twin_of(rows: list[dict], row: dict) -> dict:
    """The native door's row at the same transport and concurrency as protocol door `row`."""
    (twin,) = [
        r
        for r in rows
        if r["transport"] == row["transport"]
        and r["concurrency"] == row["concurrency"]
        and not r["protocol"]
    ]
    return twin


# -- the report -----------------------------------------------------------------------------


def report_lines(doors: dict | None) -> list[str]:
    """The report's section: each protocol door beside its twin."""
    if doors is None:
        return []
    header = ["door", "concurrency", "tool", "calls/s", "p50 ms", "vs twin", "errors"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for row in doors["rows"]:
        versus = ""
        if row["protocol"] and row["calls_per_s"] is not None:
            twin = twin_of(doors["rows"], row)
            versus = f"{row['calls_per_s'] / twin['calls_per_s']:.2f}x calls/s"
            if row["p50_ms"] is not None and twin["p50_ms"] is not None:
                versus += f", p50 {row['p50_ms'] - twin['p50_ms']:+.2f} ms"
        cells = [
            row["door"],
            row["concurrency"],
            row["tool"] or "not measured",
            "n/a" if row["calls_per_s"] is None else f"{row['calls_per_s']:.1f}",
            "n/a" if row["p50_ms"] is None else f"{row['p50_ms']:.2f}",
            versus,
            row["errors"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    missing = [t for t, found in doors["tools"].items() if not found]
    note = (
        f" Not measured at c=64 (tool missing): {', '.join(missing)} "
        "(Debian packages nghttp2-client for h2load, wrk for wrk)."
        if missing
        else ""
    )
    return [
        "## The Open Inference Protocol (KServe v2) beside its native twins",
        "",
        f"One {doors['review_words']}-word review a call, the same for every door; twins in "
        f"turns over {doors['rounds']} rounds (medians). c=64: h2load for gRPC, wrk for HTTP; "
        f"c=1: one call at a time from Python.{note}",
        "",
        *lines,
        "",
    ]


# -- alone ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from bench.common.plan import FULL, QUICK
    from bench.common.reviews import data_path, sample_test_reviews
    from server.config import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(prog="python -m bench.protocol_doors", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--data", help="aclImdb .tar.gz or directory")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/protocol_doors.json"))
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    review = pick_review(sample_test_reviews(data_path(args.data), plan.sample_size, 0).reviews)
    with tempfile.TemporaryDirectory(prefix="sentiment-protocol-doors-") as work:
        work = Path(work)
        with start_server(args.model_dir, work / "server.log", http_port=free_port()) as server:
            doors = measure(server, review, plan.load_s / 2, work)
    from bench.acceptance import protocol_door_checks

    doors["acceptance"] = protocol_door_checks(doors)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doors, indent=2) + "\n")
    verdicts = [
        f"- {'PASS' if v['passed'] else 'FAIL'} {v['name']}: {v['measured']:g} "
        f"{v['comparison']} {v['required']:g} ({v['detail']})"
        for v in doors["acceptance"]
    ]
    text = "\n".join([*report_lines(doors), *verdicts]) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


class _connection:
    """A keep-alive HTTP connection to loopback, closed on exit."""

    def __init__(self, port: int):
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def __enter__(self) -> http.client.HTTPConnection:
        return self._connection

    def __exit__(self, *exc_info: object) -> None:
        self._connection.close()


if __name__ == "__main__":
    sys.exit(main())
