"""POST /explain on a real in-process server: /predict's conventions, spans into the text sent."""

from __future__ import annotations

import json

import pytest

from tests.test_http import JSON_HEADERS, call, free_port, post

REVIEW = "Loved it.<br /><br />Brilliant, moving — and fun!!! 日本語"


def explain(port: int, payload) -> object:
    return call(port, "POST", "/explain", json.dumps(payload).encode(), JSON_HEADERS)


@pytest.fixture(scope="module")
def port(start_server) -> int:
    with start_server(http_port=free_port(), metrics_port=free_port()) as running:
        yield running.server.http_api.port


def test_explain_answers_like_predict_with_words_and_the_method(port):
    answer = explain(port, {"review": REVIEW})
    assert answer.status == 200, answer.body
    body = answer.json()
    predicted = post(port, {"review": REVIEW}).json()
    assert body["sentiment"] == predicted["sentiment"]
    assert body["score"] == pytest.approx(predicted["score"], abs=1e-6)
    assert body["model_version"] == 1
    shown = [(REVIEW[w["start"] : w["end"]], w["status"]) for w in body["words"]]
    assert shown == [
        ("Loved", "scored"),
        ("it", "scored"),
        ("Brilliant", "scored"),
        ("moving", "scored"),
        ("—", "removed"),
        ("and", "scored"),
        ("fun", "scored"),
        ("日本語", "removed"),
    ]
    method = body["method"]
    assert method["name"] == "integrated_gradients" and method["steps"] >= 8
    total = sum(w["attribution"] or 0 for w in body["words"])
    assert total == pytest.approx(body["score"] - method["baseline_score"], abs=2e-3)
    assert abs(method["convergence_delta"]) < 2e-3


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"review": ""}, "review 0 is empty"),
        ({"review": "!!! 😀"}, "review 0 has no words after removing markup and punctuation"),
        ({"review": "x" * 70_000}, "review 0 is 70000 bytes; the limit is 65536 bytes"),
        ({"reviews": ["a", "b"]}, '/explain takes one review: send {"review": "text"}'),
        ({"text": "a"}, 'the body has neither of "review" and "reviews"'),
        (["a"], "the body must be a JSON object, not an array"),
    ],
)
def test_bad_input_gets_what_predict_gives(port, payload, message):
    answer = explain(port, payload)
    assert answer.status == 400
    assert answer.error["code"] == "invalid_request"
    assert message in answer.error["message"]
    if "review" in payload and isinstance(payload, dict):
        assert post(port, payload).error["message"] == answer.error["message"]


def test_explain_is_in_the_openapi_document(port):
    document = call(port, "GET", "/openapi.json").json()
    operation = document["paths"]["/explain"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "429", "503", "504"}
