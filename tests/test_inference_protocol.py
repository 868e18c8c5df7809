"""The Open Inference Protocol (KServe v2) on a real server, driven by the real tritonclient.

tritonclient.http runs in this process; tritonclient.grpc in a child
(tests/triton_grpc_driver.py), because its protobuf messages and the server's
stubs share names that protobuf takes once a process. Typed contents, which
tritonclient never sends, go through the server's own stubs. Scores must equal
Predict's for the same reviews, and every bad request must get the protocol's
answer naming what was wrong. (The kserve SDK pins protobuf<7 in every release,
so it cannot be installed beside this server: not tested.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil

import grpc
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.api import inference_protocol as protocol
from server.api.inference import grpc_predict_v2_pb2 as pb
from server.api.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from server.errors import InvalidRequestError
from tests.fake_sentiment_service import make_test_pki
from tests.helpers import REVIEWS, occupy, request, until
from tests.model_spies import GatedModel
from tests.test_http import JSON_HEADERS, call, free_port
from tests.triton_grpc_driver import TritonGrpc

MAX_REVIEWS = 8
INVALID = "StatusCode.INVALID_ARGUMENT"
NOT_FOUND = "StatusCode.NOT_FOUND"
SCORE_AND_LABEL = [
    {"name": "score", "datatype": "FP32", "shape": [-1]},
    {"name": "label", "datatype": "BYTES", "shape": [-1]},
]
TOKEN = "tok-v2-5d1e"


@pytest.fixture(scope="module")
def running(start_server):
    with start_server(http_port=free_port(), max_reviews_per_request=MAX_REVIEWS) as server:
        yield server


@pytest.fixture(scope="module")
def triton_grpc(running):
    with TritonGrpc(running.target) as client:
        yield client


@pytest.fixture(scope="module")
def http_port(running) -> int:
    return running.server.http_api.port


@pytest.fixture(scope="module")
def triton_http_client(http_port):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{http_port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def predicted(running) -> list[sentiment_pb2.Prediction]:
    """Predict's answers for REVIEWS, in one call."""
    with grpc.insecure_channel(running.target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        return list(stub.Predict(request(*REVIEWS), timeout=30).predictions)


def predict_scores(predicted) -> list[np.float32]:
    return [np.float32(p.score) for p in predicted]


def predict_labels(predicted) -> list[str]:
    return [sentiment_pb2.Label.Name(p.label) for p in predicted]


def v2_stub(running):
    channel = grpc.insecure_channel(running.target)
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)


def typed_request(reviews: list[bytes], shape=None, **fields) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="review", datatype="BYTES", shape=shape or [len(reviews)]
    )
    tensor.contents.bytes_contents.extend(reviews)
    return pb.ModelInferRequest(model_name="imdb-lstm", inputs=[tensor], **fields)


# -- gRPC: health and metadata ---------------------------------------------------------------


def test_grpc_health_and_metadata_state_the_model_exactly(triton_grpc):
    assert triton_grpc.call("is_server_live") == {"ok": True}
    assert triton_grpc.call("is_server_ready") == {"ok": True}
    assert triton_grpc.call("is_model_ready", "imdb-lstm") == {"ok": True}
    assert triton_grpc.call("is_model_ready", "imdb-lstm", "1") == {"ok": True}
    server = triton_grpc.call("get_server_metadata", as_json=True)["ok"]
    assert server["name"] == "imdb-sentiment-service" and server["version"]
    model = triton_grpc.call("get_model_metadata", "imdb-lstm", as_json=True)["ok"]
    assert model["name"] == "imdb-lstm" and model["versions"] == ["1"]
    assert model["platform"] == "keras"
    # The JSON form of int64 is a string.
    assert model["inputs"] == [{"name": "review", "datatype": "BYTES", "shape": ["-1"]}]
    assert model["outputs"] == [
        {**tensor, "shape": [str(d) for d in tensor["shape"]]} for tensor in SCORE_AND_LABEL
    ]


def test_grpc_metadata_and_readiness_of_an_unknown_model_or_version_are_not_found(triton_grpc):
    for args in (("sentiment",), ("imdb-lstm", "7")):
        for method in ("get_model_metadata", "is_model_ready"):
            error = triton_grpc.call(method, *args)["error"]
            assert error["status"] == NOT_FOUND, (method, args)
    error = triton_grpc.call("get_model_metadata", "imdb-lstm", "7")["error"]
    assert 'no version "7"' in error["message"] and "version 1 serves" in error["message"]
    error = triton_grpc.call("is_model_ready", "sentiment")["error"]
    assert 'no model "sentiment"' in error["message"]


# -- gRPC: ModelInfer ------------------------------------------------------------------------


def test_grpc_model_infer_scores_equal_predicts(triton_grpc, predicted):
    answer = triton_grpc.infer(REVIEWS, request_id="call-42")["ok"]
    assert answer["model_name"] == "imdb-lstm" and answer["model_version"] == "1"
    assert answer["id"] == "call-42"
    assert answer["raw"] is True  # tritonclient sends raw_input_contents: raw comes back
    score, label = answer["outputs"]["score"], answer["outputs"]["label"]
    assert (score["datatype"], score["shape"]) == ("FP32", [len(REVIEWS)])
    assert (label["datatype"], label["shape"]) == ("BYTES", [len(REVIEWS)])
    assert [np.float32(s) for s in score["data"]] == predict_scores(predicted)
    assert label["data"] == predict_labels(predicted)


def test_grpc_an_n_by_1_input_is_answered_n_by_1(triton_grpc, predicted):
    answer = triton_grpc.infer(REVIEWS[:3], shape=[3, 1])["ok"]
    for output in answer["outputs"].values():
        assert output["shape"] == [3, 1] and output["numpy_shape"] == [3, 1]
    assert [np.float32(s) for s in answer["outputs"]["score"]["data"]] == predict_scores(predicted)[
        :3
    ]


def test_grpc_only_the_requested_outputs_are_answered(triton_grpc, predicted):
    answer = triton_grpc.infer(REVIEWS[:2], outputs=["label"])["ok"]
    assert list(answer["outputs"]) == ["label"]
    assert answer["outputs"]["label"]["data"] == predict_labels(predicted)[:2]
    answer = triton_grpc.infer(REVIEWS[:2], outputs=["score"], version="1")["ok"]
    assert list(answer["outputs"]) == ["score"]


def test_grpc_typed_contents_are_answered_typed(running, predicted):
    channel, stub = v2_stub(running)
    with channel:
        response = stub.ModelInfer(
            typed_request([r.encode() for r in REVIEWS], id="typed"), timeout=30
        )
    assert response.id == "typed" and not response.raw_output_contents
    score, label = response.outputs
    assert [np.float32(s) for s in score.contents.fp32_contents] == predict_scores(predicted)
    assert [b.decode() for b in label.contents.bytes_contents] == predict_labels(predicted)


BAD_GRPC_CALLS = [
    ("unknown model", {"model": "sentiment"}, NOT_FOUND, 'no model "sentiment"'),
    ("unknown version", {"version": "3"}, NOT_FOUND, 'no version "3"'),
    (
        "wrong datatype",
        {"datatype": "FP32", "values": [0.5], "reviews": None},
        INVALID,
        'input "review" has datatype FP32; it must be BYTES',
    ),
    ("shape disagrees", {"shape": [3]}, INVALID, "shape [3], so 3 elements, but its data holds 2"),
    ("shape of 3 dims", {"shape": [1, 2, 1]}, INVALID, "it must be [N] or [N, 1]"),
    ("wrong input name", {"name": "text"}, INVALID, 'unknown input "text"'),
    (
        "non-UTF-8",
        {"reviews": [b"fine", b"caf\xe9 review"]},
        INVALID,
        'input "review" element 1 is not valid UTF-8: byte 0xe9 at offset 3',
    ),
    ("empty review", {"reviews": ["great", "  "]}, INVALID, 'input "review" element 1 is empty'),
    (
        "too many reviews",
        {"reviews": ["fine"] * (MAX_REVIEWS + 1)},
        INVALID,
        f"holds {MAX_REVIEWS + 1} reviews; the limit is {MAX_REVIEWS}",
    ),
    ("unknown output", {"outputs": ["probability"]}, INVALID, 'unknown output "probability"'),
    ("no words", {"reviews": ["great", "!!!"]}, INVALID, 'input "review": review 1 has no words'),
]


@pytest.mark.parametrize(
    ("case", "changes", "status", "message"), BAD_GRPC_CALLS, ids=[c[0] for c in BAD_GRPC_CALLS]
)
def test_grpc_bad_requests_get_the_protocols_answer(triton_grpc, case, changes, status, message):
    arguments = {"reviews": ["great", "awful"], **changes}
    error = triton_grpc.infer(arguments.pop("reviews"), **arguments)["error"]
    assert error["status"] == status
    assert message in error["message"]


@pytest.mark.parametrize(
    ("case", "build", "message"),
    [
        ("no input", lambda: pb.ModelInferRequest(model_name="imdb-lstm"), "has no inputs"),
        (
            "input twice",
            lambda: pb.ModelInferRequest(
                model_name="imdb-lstm", inputs=[typed_request([b"a"]).inputs[0]] * 2
            ),
            'input "review" is given 2 times',
        ),
        (
            "extra input",
            lambda: pb.ModelInferRequest(
                model_name="imdb-lstm",
                inputs=[
                    typed_request([b"a"]).inputs[0],
                    pb.ModelInferRequest.InferInputTensor(name="mask", datatype="BOOL", shape=[1]),
                ],
            ),
            'unknown input "mask"',
        ),
        (
            "raw cut short",
            lambda: pb.ModelInferRequest(
                model_name="imdb-lstm",
                inputs=[
                    pb.ModelInferRequest.InferInputTensor(
                        name="review", datatype="BYTES", shape=[1]
                    )
                ],
                raw_input_contents=[b"\x05\x00\x00\x00abc"],
            ),
            "element 0 declares 5 bytes but 3 remain",
        ),
        (
            "raw and typed",
            lambda: pb.ModelInferRequest(
                model_name="imdb-lstm",
                inputs=typed_request([b"a"]).inputs,
                raw_input_contents=[protocol.join_bytes([b"a"])],
            ),
            "use one or the other",
        ),
        (
            "wrong typed field",
            lambda: pb.ModelInferRequest(
                model_name="imdb-lstm",
                inputs=[
                    pb.ModelInferRequest.InferInputTensor(
                        name="review",
                        datatype="BYTES",
                        shape=[1],
                        contents=pb.InferTensorContents(fp32_contents=[1.0]),
                    )
                ],
            ),
            "has fp32_contents",
        ),
    ],
)
def test_grpc_malformed_requests_that_tritonclient_cannot_send(running, case, build, message):
    channel, stub = v2_stub(running)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(build(), timeout=30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert message in caught.value.details()


def test_grpc_bytes_that_are_no_model_infer_request_are_invalid_argument(running):
    with grpc.insecure_channel(running.target) as channel:
        send = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            send(b"\x0a\x05\xff\xfe\xfd\xfc\xfb", timeout=30)  # model_name: not UTF-8
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in caught.value.details()


def test_the_server_still_answers_after_every_bad_request(triton_grpc, predicted):
    answer = triton_grpc.infer(REVIEWS[:1])["ok"]
    assert [np.float32(s) for s in answer["outputs"]["score"]["data"]] == predict_scores(predicted)[
        :1
    ]


def test_model_infer_calls_are_counted_and_failures_logged_with_the_request_id(
    running, triton_grpc, caplog
):
    caplog.set_level(logging.INFO, logger="server.calls")
    registry = running.server.server_metrics.registry
    labels = {
        "grpc_type": "unary",
        "grpc_service": "inference.GRPCInferenceService",
        "grpc_method": "ModelInfer",
    }

    def handled(code: str) -> float:
        sample = registry.get_sample_value(
            "grpc_server_handled_total", {**labels, "grpc_code": code}
        )
        return sample or 0.0

    ok, invalid = handled("OK"), handled("INVALID_ARGUMENT")
    triton_grpc.infer(["great"])
    triton_grpc.infer(["  "], headers={"x-request-id": "v2-empty-review"})
    assert handled("OK") == ok + 1 and handled("INVALID_ARGUMENT") == invalid + 1
    (line,) = [r for r in caplog.records if getattr(r, "request_id", "") == "v2-empty-review"]
    assert line.method == "/inference.GRPCInferenceService/ModelInfer"
    assert "element 0 is empty" in line.getMessage()


# -- gRPC: deadlines, overload, drain, token, TLS ---------------------------------------------


def test_a_full_queue_refuses_model_infer_with_the_retry_hint_and_a_deadline_ends_it(
    start_server, serving_model
):
    model = GatedModel(serving_model)
    settings = {"queue_capacity": 2, "max_batch_size": 2, "max_reviews_per_request": 2}

    async def scenario(running) -> tuple[grpc.aio.AioRpcError, grpc.aio.AioRpcError]:
        async with grpc.aio.insecure_channel(running.target) as channel:
            predict = sentiment_pb2_grpc.SentimentServiceStub(channel)
            infer = pb_grpc.GRPCInferenceServiceStub(channel)
            first = await occupy(predict, model)
            queued = asyncio.ensure_future(predict.Predict(request("a", "b"), timeout=60))
            await until(lambda: running.server.stats().queue_depth == 2)
            with pytest.raises(grpc.aio.AioRpcError) as full:
                await infer.ModelInfer(typed_request([b"one more"]), timeout=30)
            model.release.set()
            await asyncio.gather(first, queued)
            model.release.clear()
            first = await occupy(predict, model)
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await infer.ModelInfer(typed_request([b"too late"]), timeout=0.3)
            model.release.set()
            await first
            return full.value, late.value

    with start_server(model=model, **settings) as running:
        full, late = asyncio.run(scenario(running))
    assert full.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry after about" in full.details()
    assert "grpc-retry-pushback-ms" in dict(full.trailing_metadata() or ())
    assert late.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_draining_server_is_not_ready_and_refuses_model_infer(start_server):
    with start_server(http_port=free_port()) as running:
        channel, stub = v2_stub(running)
        with channel:
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is True
            running.server.servicer.drain()
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is False
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live is True
            ready = stub.ModelReady(pb.ModelReadyRequest(name="imdb-lstm"), timeout=10)
            assert ready.ready is False
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(typed_request([b"great"]), timeout=10)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        port = running.server.http_api.port

        async def drain_http() -> None:
            running.server.http_api._draining = True  # as stop() begins

        running.call(drain_http())
        assert call(port, "GET", "/v2/health/live").status == 200
        for path in ("/v2/health/ready", "/v2/models/imdb-lstm/ready"):
            answer = call(port, "GET", path)
            assert answer.status == 503 and "draining" in answer.json()["error"], path
        body = json.dumps(json_request(["great"])).encode()
        assert call(port, "POST", "/v2/models/imdb-lstm/infer", body).status == 503


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def test_token_and_tls_apply_to_the_inference_protocol(start_server, pki, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = {"tls_cert": pki["server"], "tls_key": pki["server_key"]}
    with start_server(auth_token_file=token_file, **settings) as running:
        with TritonGrpc(running.target, root_certificates=str(pki["ca"])) as client:
            error = client.infer(["great"])["error"]
            assert error["status"] == "StatusCode.UNAUTHENTICATED"
            assert client.call("is_server_live")["error"]["status"] == "StatusCode.UNAUTHENTICATED"
            bearer = {"authorization": f"Bearer {TOKEN}"}
            answer = client.infer(["great"], headers=bearer)["ok"]
            assert answer["outputs"]["label"]["data"][0] in ("POSITIVE", "NEGATIVE")
            assert client.call("is_server_live", headers=bearer) == {"ok": True}
        with TritonGrpc(running.target) as plaintext:
            assert "error" in plaintext.call("is_server_live", headers=bearer)


# -- HTTP ------------------------------------------------------------------------------------


def json_request(reviews, shape=None, **fields) -> dict:
    tensor = {"name": "review", "datatype": "BYTES", "shape": shape or [len(reviews)]}
    return {"inputs": [{**tensor, "data": reviews}], **fields}


def test_http_health_and_metadata_with_tritonclient(triton_http_client, http_port):
    client = triton_http_client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("imdb-lstm") and client.is_model_ready("imdb-lstm", "1")
    assert not client.is_model_ready("sentiment") and not client.is_model_ready("imdb-lstm", "2")
    server = client.get_server_metadata()
    assert server["name"] == "imdb-sentiment-service"
    assert server["extensions"] == ["binary_tensor_data"]
    model = client.get_model_metadata("imdb-lstm")
    assert model == {
        "name": "imdb-lstm",
        "versions": ["1"],
        "platform": "keras",
        "inputs": [{"name": "review", "datatype": "BYTES", "shape": [-1]}],
        "outputs": SCORE_AND_LABEL,
    }
    assert client.get_model_metadata("imdb-lstm", "1") == model
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("imdb-lstm", "2")
    assert caught.value.status() == "404" and 'no version "2"' in caught.value.message()
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/imdb-lstm/ready"):
        answer = call(http_port, "GET", path)
        assert (answer.status, answer.body) == (200, b""), path


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_scores_equal_predicts(triton_http_client, predicted, binary):
    review = triton_http.InferInput("review", [len(REVIEWS)], "BYTES")
    review.set_data_from_numpy(np.array(REVIEWS, dtype=np.object_), binary_data=binary)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in ("score", "label")]
    result = triton_http_client.infer("imdb-lstm", [review], outputs=outputs, request_id="h-1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("imdb-lstm", "1")
    assert response["id"] == "h-1"
    for output in response["outputs"]:
        assert ("binary_data_size" in output.get("parameters", {})) is binary
    assert result.as_numpy("score").tolist() == [float(s) for s in predict_scores(predicted)]
    # tritonclient gives JSON text as str, binary elements as bytes.
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == predict_labels(predicted)


def test_http_infer_with_tritonclients_defaults_is_binary_both_ways(triton_http_client, predicted):
    review = triton_http.InferInput("review", [3, 1], "BYTES")
    review.set_data_from_numpy(np.array(REVIEWS[:3], dtype=np.object_).reshape(3, 1))
    result = triton_http_client.infer("imdb-lstm", [review], model_version="1")
    assert result.as_numpy("score").shape == (3, 1)
    assert result.as_numpy("score").reshape(-1).tolist() == [
        float(s) for s in predict_scores(predicted)[:3]
    ]
    only = triton_http_client.infer(
        "imdb-lstm", [review], outputs=[triton_http.InferRequestedOutput("label")]
    )
    assert [o["name"] for o in only.get_response()["outputs"]] == ["label"]


def test_http_json_tensors_as_curl_sends_them(http_port, predicted):
    body = json_request([[r] for r in REVIEWS[:2]], shape=[2, 1], id="curl")
    answer = call(http_port, "POST", "/v2/models/imdb-lstm/infer", json.dumps(body).encode())
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/json")
    found = answer.json()
    assert found["id"] == "curl" and found["model_version"] == "1"
    score, label = found["outputs"]
    assert score == {
        "name": "score",
        "datatype": "FP32",
        "shape": [2, 1],
        "data": [float(s) for s in predict_scores(predicted)[:2]],
    }
    assert label["data"] == predict_labels(predicted)[:2]


BAD_HTTP_BODIES = [
    (
        "unknown model",
        "/v2/models/sentiment/infer",
        json_request(["a"]),
        404,
        'no model "sentiment"',
    ),
    (
        "unknown version",
        "/v2/models/imdb-lstm/versions/9/infer",
        json_request(["a"]),
        404,
        'no version "9"',
    ),
    (
        "wrong datatype",
        None,
        {"inputs": [{"name": "review", "datatype": "FP32", "shape": [1], "data": [1.5]}]},
        400,
        "datatype FP32",
    ),
    ("shape disagrees", None, json_request(["a", "b"], shape=[3]), 400, "its data holds 2"),
    ("missing input", None, {"inputs": []}, 400, "has no inputs"),
    ("no inputs key", None, {"outputs": []}, 400, 'no "inputs"'),
    (
        "extra input",
        None,
        {"inputs": json_request(["a"])["inputs"] * 2},
        400,
        'input "review" is given 2 times',
    ),
    ("number element", None, json_request(["a", 7]), 400, "element 1 is a number"),
    ("lone surrogate", None, json_request(["a", "\ud800"]), 400, "element 1 is not valid Unicode"),
    ("empty review", None, json_request(["", "b"]), 400, 'input "review" element 0 is empty'),
    (
        "too many reviews",
        None,
        json_request(["a"] * (MAX_REVIEWS + 1)),
        400,
        f"the limit is {MAX_REVIEWS} a request",
    ),
    ("unknown output", None, json_request(["a"], outputs=[{"name": "x"}]), 400, 'output "x"'),
    ("body not an object", None, ["a"], 400, "the body must be a JSON object"),
]


@pytest.mark.parametrize(
    ("case", "path", "body", "status", "message"),
    BAD_HTTP_BODIES,
    ids=[c[0] for c in BAD_HTTP_BODIES],
)
def test_http_bad_requests_get_the_protocols_error_object(
    http_port, case, path, body, status, message
):
    encoded = json.dumps(body).encode()
    answer = call(http_port, "POST", path or "/v2/models/imdb-lstm/infer", encoded, JSON_HEADERS)
    assert answer.status == status
    error = answer.json()
    assert list(error) == ["error"] and isinstance(error["error"], str)
    assert message in error["error"]


@pytest.mark.parametrize(
    ("case", "body", "headers", "message"),
    [
        ("not JSON", b'{"inputs": [', {}, "the body is not valid JSON"),
        ("bad header length", b"{}", {"Inference-Header-Content-Length": "99"}, "header's size"),
        (
            "binary data cut short",
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "review",
                            "datatype": "BYTES",
                            "shape": [1],
                            "parameters": {"binary_data_size": 40},
                        }
                    ]
                }
            ).encode()
            + b"\x05\x00\x00\x00great",
            "header",
            "declares 40 bytes of binary data but 9 remain",
        ),
    ],
)
def test_http_malformed_bodies_are_400(http_port, case, body, headers, message):
    if headers == "header":
        header_size = body.index(b"\x05")
        headers = {"Inference-Header-Content-Length": str(header_size)}
    answer = call(http_port, "POST", "/v2/models/imdb-lstm/infer", body, headers)
    assert answer.status == 400 and message in answer.json()["error"]


def test_http_binary_non_utf8_review_is_named(http_port):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "review",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": 15},
                }
            ]
        }
    ).encode()
    binary = protocol.join_bytes([b"great", b"\xff\xfe"])
    assert len(binary) == 15
    headers = {"Inference-Header-Content-Length": str(len(header))}
    answer = call(http_port, "POST", "/v2/models/imdb-lstm/infer", header + binary, headers)
    assert answer.status == 400
    assert answer.json()["error"].startswith('input "review" element 1 is not valid UTF-8')


def test_http_unknown_model_metadata_is_404_with_the_error_object(http_port):
    for path in ("/v2/models/sentiment", "/v2/models/sentiment/ready"):
        answer = call(http_port, "GET", path)
        assert answer.status == 404 and 'no model "sentiment"' in answer.json()["error"], path


# -- the shared conversion, without a server -------------------------------------------------


def test_raw_bytes_elements_round_trip():
    elements = [b"", b"great", "caf\u00e9".encode(), b"x" * 300]
    raw = protocol.join_bytes(elements)
    assert raw[:4] == b"\x00\x00\x00\x00" and raw[4:8] == b"\x05\x00\x00\x00"
    assert protocol.split_bytes(raw) == elements
    with pytest.raises(InvalidRequestError, match="inside the 4-byte length of element 4"):
        protocol.split_bytes(raw + b"\x01\x00")


def test_raw_fp32_is_little_endian_single_precision():
    assert protocol.raw_fp32([1.0, 0.5]) == b"\x00\x00\x80\x3f\x00\x00\x00\x3f"
    assert np.frombuffer(protocol.raw_fp32([0.25, 0.75]), "<f4").tolist() == [0.25, 0.75]


def test_requested_outputs_keep_the_models_order_and_refuse_repeats():
    assert protocol.requested_outputs([]) == ("score", "label")
    assert protocol.requested_outputs(["label", "score"]) == ("score", "label")
    with pytest.raises(InvalidRequestError, match='output "label" is requested more than once'):
        protocol.requested_outputs(["label", "label"])


def test_binary_input_data_is_read_by_its_declared_size():
    from server.api.kserve_http import inference_request_of

    binary = protocol.join_bytes([b"one", b"two"])
    body = {
        "id": "b",
        "parameters": {"binary_data_output": True},
        "inputs": [
            {
                "name": "review",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(binary)},
            }
        ],
    }
    call_, binary_outputs = inference_request_of(body, binary, "imdb-lstm", "")
    (tensor,) = call_.inputs
    assert tensor.raw == binary and binary_outputs == {"score", "label"}
    assert protocol.reviews_of(call_.inputs, 8) == (["one", "two"], (2,))
    with pytest.raises(InvalidRequestError, match="binary data that no input"):
        inference_request_of(body, binary + b"!", "imdb-lstm", "")


def test_nested_json_data_is_read_row_major():
    from server.api.kserve_http import _flattened

    assert _flattened([["a"], ["b", ["c"]], "d"]) == ["a", "b", "c", "d"]
