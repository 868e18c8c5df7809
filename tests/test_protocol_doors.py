"""bench/protocol_doors.py without a load: its requests are what the server takes, its parsing
reads the tools' output, and the acceptance rows hold the issue's bars (issue 28, item 5).
The loads themselves run only in `make bench` (and its quick run, tests/test_bench.py)."""

from __future__ import annotations

import http.client
import json

import grpc
import pytest

from bench import acceptance, protocol_doors
from server.api.inference import grpc_predict_v2_pb2 as v2
from tests.test_http import free_port

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8080/v2/models/imdb-lstm/infer
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.20ms    3.02ms  41.77ms   71.30%
    Req/Sec     4.51k   210.13     4.90k    70.00%
  Latency Distribution
     50%   13.95ms
     75%   15.80ms
     90%   18.02ms
     99%   24.66ms
  22443 requests in 5.00s, 5.31MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   4486.21
Transfer/sec:      1.06MB
"""


def test_wrk_summary_is_read():
    parsed = protocol_doors.parse_wrk(WRK_OUTPUT)
    assert parsed == {"calls_per_s": 4486.21, "p50_ms": 13.95, "errors": 7}
    microseconds = WRK_OUTPUT.replace("13.95ms", "812.00us")
    assert protocol_doors.parse_wrk(microseconds)["p50_ms"] == pytest.approx(0.812)
    with pytest.raises(RuntimeError, match="cannot read wrk's output"):
        protocol_doors.parse_wrk("unable to connect to 127.0.0.1:8080 Connection refused")


def test_the_model_infer_frame_holds_one_review_as_tritonclient_sends_it(tmp_path):
    frame = protocol_doors.write_grpc_frame(
        protocol_doors.model_infer_request("A fine film."), tmp_path / "infer.grpc"
    ).read_bytes()
    assert frame[0] == 0 and int.from_bytes(frame[1:5], "big") == len(frame) - 5
    request = v2.ModelInferRequest.FromString(frame[5:])
    assert request.model_name == "imdb-lstm"
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("review", "BYTES", [1])
    assert list(request.raw_input_contents) == [b"\x0c\x00\x00\x00A fine film."]


def test_every_door_answers_its_bench_request(start_server):
    """One call of each door's request, as the bench sends it: no load."""
    review = "A wonderful, moving film."
    with start_server(http_port=free_port()) as running:
        with grpc.insecure_channel(running.target) as channel:
            for door in ("Predict", "ModelInfer"):
                assert protocol_doors.grpc_caller(channel, door, review)() is True, door
        connection = http.client.HTTPConnection("127.0.0.1", running.server.http_api.port)
        try:
            for door, body in protocol_doors.http_bodies(review).items():
                assert protocol_doors.http_caller(connection, door, body)() is True, door
        finally:
            connection.close()


def _row(transport, door, protocol, concurrency, calls_per_s, p50_ms, tool="h2load") -> dict:
    return {
        "transport": transport,
        "door": door,
        "protocol": protocol,
        "concurrency": concurrency,
        "tool": tool,
        "calls_per_s": calls_per_s,
        "p50_ms": p50_ms,
        "errors": 0,
    }


def doors(infer_c64: float, infer_c1_p50: float, http_tool: str | None = "wrk") -> dict:
    http_rate = 900.0 if http_tool else None
    return {
        "review_words": 230,
        "rounds": 2,
        "tools": {"grpc": True, "http": http_tool is not None},
        "rows": [
            _row("grpc", "Predict", False, 1, 400.0, 2.0, "python"),
            _row("grpc", "ModelInfer", True, 1, 390.0, infer_c1_p50, "python"),
            _row("grpc", "Predict", False, 64, 1000.0, None),
            _row("grpc", "ModelInfer", True, 64, infer_c64, None),
            _row("http", "POST /predict", False, 1, 300.0, 3.0, "python"),
            _row("http", "POST /v2/models/imdb-lstm/infer", True, 1, 290.0, 3.1, "python"),
            _row("http", "POST /predict", False, 64, http_rate, 14.0, http_tool),
            _row("http", "POST /v2/models/imdb-lstm/infer", True, 64, http_rate, 14.5, http_tool),
        ],
    }


def test_the_bars_are_90_percent_of_the_twins_calls_and_0_3_ms_of_its_p50():
    passing = {v["name"]: v for v in acceptance.protocol_door_checks(doors(900.0, 2.3))}
    assert len(passing) == 4 and all(v["passed"] for v in passing.values())
    grpc_c64 = passing["ModelInfer c=64 vs Predict (fraction of calls/s)"]
    assert grpc_c64["measured"] == pytest.approx(0.9)
    failing = {v["name"]: v for v in acceptance.protocol_door_checks(doors(899.0, 2.31))}
    assert failing["ModelInfer c=64 vs Predict (fraction of calls/s)"]["passed"] is False
    assert failing["ModelInfer c=1 p50 minus Predict's (ms)"]["passed"] is False
    assert failing["POST /v2/models/imdb-lstm/infer c=1 p50 minus POST /predict's (ms)"]["passed"]


def test_a_missing_tool_is_a_failed_row_that_says_so_and_the_report_names_it():
    measured = doors(950.0, 2.1, http_tool=None)
    (http_c64,) = [
        v
        for v in acceptance.protocol_door_checks(measured)
        if v["name"].startswith("POST /v2/models/imdb-lstm/infer c=64")
    ]
    assert http_c64["passed"] is False and "not measured" in http_c64["detail"]
    text = "\n".join(protocol_doors.report_lines(measured))
    assert "Not measured at c=64 (tool missing): http" in text
    assert "| ModelInfer | 64 | h2load | 950.0 | n/a | 0.95x calls/s | 0 |" in text
    assert "| ModelInfer | 1 | python | 390.0 | 2.10 | 0.97x calls/s, p50 +0.10 ms | 0 |" in text


def test_rounds_are_summarised_by_their_median():
    runs = [
        {"tool": "wrk", "calls_per_s": 100.0, "p50_ms": 3.0, "errors": 1},
        {"tool": "wrk", "calls_per_s": 300.0, "p50_ms": 1.0, "errors": 0},
        {"tool": "wrk", "calls_per_s": 200.0, "p50_ms": 2.0, "errors": 0},
    ]
    row = protocol_doors.summarise("http", "POST /predict", False, 64, runs)
    assert (row["calls_per_s"], row["p50_ms"], row["errors"]) == (200.0, 2.0, 1)
    assert row["calls_per_s_by_round"] == [100.0, 300.0, 200.0]
    missing = protocol_doors.summarise("grpc", "Predict", False, 64, None)
    assert missing["calls_per_s"] is None and missing["tool"] is None
    assert json.loads(json.dumps(missing)) == missing
