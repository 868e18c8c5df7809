"""The Explain RPC on a real in-process server: the servicer, both client libraries and the CLI,
with Predict's checks and messages, deadlines, authentication and per-method metrics."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from imdb_sentiment_client import (
    AsyncSentimentClient,
    AuthenticationError,
    DeadlineExceededError,
    InvalidReviewError,
    SentimentClient,
)
from imdb_sentiment_client.cli import main as client_main
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from tests.test_metrics import call_labels, free_port, scrape

REVIEW = "Loved it.<br /><br />Brilliant, moving — and fun!!! 日本語 zzqx"


def test_explain_agrees_with_predict_and_points_into_the_review(grpc_server):
    with SentimentClient(grpc_server) as client:
        explanation = client.explain(REVIEW)
        (predicted,) = client.predict([REVIEW])
    assert explanation.prediction.label == predicted.label
    assert explanation.prediction.score == pytest.approx(predicted.score, abs=1e-6)
    shown = [(REVIEW[w.start : w.end], w.status) for w in explanation.words]
    assert shown == [
        ("Loved", "scored"),
        ("it", "scored"),
        ("Brilliant", "scored"),
        ("moving", "scored"),
        ("—", "removed"),
        ("and", "scored"),
        ("fun", "scored"),
        ("日本語", "removed"),
        ("zzqx", "out_of_vocabulary"),
    ]
    removed = [w for w in explanation.words if w.status == "removed"]
    assert all(w.attribution is None and w.token is None for w in removed)
    total = sum(w.attribution for w in explanation.words if w.attribution is not None)
    gap = explanation.prediction.score - explanation.baseline_score
    assert total == pytest.approx(gap, abs=1e-3)
    assert explanation.method == "integrated_gradients" and explanation.steps >= 8
    assert abs(explanation.convergence_delta) < 1e-3
    assert explanation.strongest(2)[0].attribution is not None


def test_the_async_client_explains_too(grpc_server):
    async def explain():
        async with AsyncSentimentClient(grpc_server) as client:
            return await client.explain("a wonderful film"), await client.predict(
                ["a wonderful film"]
            )

    explanation, (predicted,) = asyncio.run(explain())
    assert explanation.prediction.score == pytest.approx(predicted.score, abs=1e-6)
    assert [w.token for w in explanation.words] == ["a", "wonderful", "film"]


@pytest.mark.parametrize(
    "review", ["", "   ", "!!! 😀 …", "x" * 70_000], ids=["empty", "blank", "wordless", "too-long"]
)
def test_bad_input_gets_predicts_status_and_message(grpc_server, review):
    with grpc.insecure_channel(grpc_server) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as explained:
            stub.Explain(sentiment_pb2.ExplainRequest(review=review), timeout=30)
        with pytest.raises(grpc.RpcError) as predicted:
            stub.Predict(sentiment_pb2.PredictRequest(reviews=[review]), timeout=30)
    assert explained.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert explained.value.details() == predicted.value.details()
    assert explained.value.details().startswith("review 0 ")


def test_the_client_raises_invalid_review_and_deadline_errors(grpc_server):
    with SentimentClient(grpc_server, retry=None) as client:
        with pytest.raises(InvalidReviewError, match="review 0 is empty"):
            client.explain("")
        with pytest.raises(DeadlineExceededError):
            client.explain("a long enough review " * 300, timeout_s=0.001)
        with pytest.raises(TypeError, match="one review as a str"):
            client.explain(["a list"])


def test_explain_needs_the_token_and_has_its_own_latency_histogram(start_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("tok-explain\n")
    metrics_port = free_port()
    with start_server(auth_token_file=token_file, metrics_port=metrics_port) as running:
        with SentimentClient(running.target, retry=None) as client:
            with pytest.raises(AuthenticationError):
                client.explain("a fine film")
        with SentimentClient(running.target, token="tok-explain") as client:
            client.explain("a fine film")
        values, _ = scrape(metrics_port)
    count = ("grpc_server_handling_seconds_count", call_labels("Explain"))
    assert values[count] == 2
    handled = call_labels("Explain", grpc_code="UNAUTHENTICATED")
    assert values[("grpc_server_handled_total", handled)] == 1
    assert values[("sentiment_explanations_total", ())] == 1
    assert values[("sentiment_explain_seconds_count", ())] == 1


def test_cli_explain_writes_json_lines_and_a_table_marking_the_strongest(grpc_server, capsys):
    assert client_main(["--target", grpc_server, "explain", REVIEW, "a dull film"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    assert [w["text"] for w in lines[1]["words"]] == ["a", "dull", "film"]
    first = lines[0]
    assert first["label"] in ("POSITIVE", "NEGATIVE") and first["model_version"] == 1
    assert {w["status"] for w in first["words"]} == {"scored", "removed", "out_of_vocabulary"}
    assert [w["attribution"] for w in first["words"] if w["status"] == "removed"] == [None, None]

    assert client_main(["--target", grpc_server, "--format", "table", "explain", REVIEW]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith(first["label"])
    assert sum("* strongest" in line for line in table) == 3
    assert any("日本語" in line and "removed" in line for line in table)
    assert any("zzqx" in line and "not in vocabulary" in line for line in table)


def test_cli_explain_of_a_bad_review_exits_1_with_the_server_message(grpc_server, capsys):
    assert client_main(["--target", grpc_server, "explain", "!!!"]) == 1
    assert "review 0 has no words" in capsys.readouterr().err
