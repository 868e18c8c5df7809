"""The Node.js example (examples/node/client.js) calls a real server from the .proto file alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"
POSITIVE_REVIEW = "a great wonderful superb film, loved it"
NEGATIVE_REVIEW = "an awful boring terrible waste, hated it"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js example cannot run")
    if not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        message = "examples/node has no node_modules: run `npm ci` there (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them; a skip there would hide the test
        pytest.skip(message)
    return node


def test_node_client_calls_every_rpc_from_the_proto_alone(node, grpc_server):
    result = subprocess.run(
        [node, "client.js", grpc_server, POSITIVE_REVIEW, NEGATIVE_REVIEW],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    info, predicted, *streamed = records
    assert info == {"rpc": "GetModelInfo", "name": "imdb-lstm", "version": 1, "preset": "tiny"}
    assert predicted["rpc"] == "Predict"
    assert [p["label"] for p in predicted["predictions"]] == ["POSITIVE", "NEGATIVE"]
    assert all(p["model_version"] == 1 for p in predicted["predictions"])
    assert [(r["rpc"], r["id"], r.get("label")) for r in streamed] == [
        ("StreamPredict", "r1", "POSITIVE"),
        ("StreamPredict", "r2", "NEGATIVE"),
        ("StreamPredict", "r3", None),
    ]
    assert streamed[2]["error"]["code"] == "INVALID_ARGUMENT"
    assert "empty" in streamed[2]["error"]["message"]


def test_node_client_fails_with_one_line_when_the_server_is_absent(node):
    result = subprocess.run(
        [node, "client.js", "127.0.0.1:1"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("sentiment node client: 14 UNAVAILABLE")
