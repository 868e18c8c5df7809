"""The HTTP/JSON API (`--http-port`) on a real in-process server, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message

import grpc
import pytest

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.api.http_api import OPENAPI_PATH, STATIC_DIR
from server.config import load_config
from server.errors import ConfigError, StartupError
from tests.fake_models import HeldModel
from tests.helpers import alone, wait_until

REVIEWS = [
    "great",
    "the movie was awful and boring and the plot a waste " * 12,
    "Loved it.<br /><br />Brilliant, moving and fun!",
    "zzz qqq the film",
    "a wonderful story of an actor who hated the scene",
    "terrible",
]
JSON_HEADERS = {"Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> dict:
        return self.json()["error"]


def call(port: int, method: str, path: str, body=None, headers=None, **options) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {}, **options)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def post(port: int, payload) -> Answer:
    return call(port, "POST", "/predict", json.dumps(payload).encode(), JSON_HEADERS)


@pytest.fixture(scope="module")
def running(start_server):
    """A real server (the tiny model) with its HTTP listener on."""
    with start_server(http_port=free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def port(running) -> int:
    return running.server.http_api.port


# -- the seed's shapes and many reviews ----------------------------------------------


def test_one_review_gets_the_seeds_exact_answer_shape(port, serving_model):
    answer = post(port, {"review": "a wonderful film"})
    assert answer.status == 200
    assert answer.headers.get_content_type() == "application/json"
    body = answer.json()
    assert set(body) == {"sentiment", "score"}
    assert body["score"] == pytest.approx(alone(serving_model, "a wonderful film"), abs=1e-5)
    assert body["sentiment"] == ("Positive" if body["score"] >= 0.5 else "Negative")


def test_many_reviews_answer_in_request_order(port, serving_model):
    body = post(port, {"reviews": REVIEWS}).json()
    assert set(body) == {"results", "model_version"}
    assert body["model_version"] == 1
    scores = [result["score"] for result in body["results"]]
    assert scores == pytest.approx([alone(serving_model, r) for r in REVIEWS], abs=1e-5)
    assert len({round(s, 4) for s in scores}) > 1  # order is observable
    for result in body["results"]:
        assert set(result) == {"sentiment", "score"}
        assert result["sentiment"] == ("Positive" if result["score"] >= 0.5 else "Negative")


def test_unknown_fields_are_ignored_like_the_seed(port):
    answer = post(port, {"review": "great fun", "user": "someone"})
    assert answer.status == 200 and set(answer.json()) == {"sentiment", "score"}


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"review": ""}', "application/json", "review 0 is empty"),
        (b'{"review": " \\n "}', "application/json", "review 0 is empty"),
        (b'{"reviews": ["fine", "  "]}', "application/json", "review 1 is empty"),
        (b'{"reviews": []}', "application/json", "the request has no reviews"),
        (b'{"review": "!!! <br />"}', "application/json", "review 0 has no words"),
        (b'{"review": ', "application/json", "the body is not valid JSON"),
        (b'{"review": "\xff"}', "application/json", "the body is not valid JSON"),
        (b"[" * 100_000, "application/json", "it nests too deeply"),
        (b'{"review": "fine"}', "text/plain", "the Content-Type is 'text/plain'; send"),
        (b'{"review": "fine"}', None, "the Content-Type is 'none'; send application/json"),
        (b'{"review": 5}', "application/json", '"review" must be a string, not a number'),
        (b'{"review": null}', "application/json", '"review" must be a string, not null'),
        (b'{"reviews": "fine"}', "application/json", '"reviews" must be an array of strings'),
        (b'{"reviews": ["ok", {}]}', "application/json", "review 1 must be a string, not an"),
        (b'["fine"]', "application/json", "the body must be a JSON object, not an array"),
        (b"{}", "application/json", 'the body has neither of "review" and "reviews"'),
        (b'{"review": "a", "reviews": ["b"]}', "application/json", "the body has both"),
        (b'{"review": "a\\ud800b"}', "application/json", "review is not valid Unicode"),
    ],
)
def test_a_bad_request_is_400_with_a_json_error_naming_the_problem(
    port, body, content_type, message
):
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = call(port, "POST", "/predict", body, headers)
    assert answer.status == 400, answer.body
    assert answer.error["code"] == "invalid_request"
    assert message in answer.error["message"]


def test_unknown_paths_and_methods_answer_json_errors(port):
    missing = call(port, "GET", "/nowhere")
    assert (missing.status, missing.error["code"]) == (404, "not_found")
    wrong_method = call(port, "GET", "/predict")
    assert (wrong_method.status, wrong_method.error["code"]) == (405, "method_not_allowed")
    assert "use POST" in wrong_method.error["message"]


def test_limits_are_the_grpc_ones(start_server):
    settings = {"max_reviews_per_request": 2, "max_review_bytes": 1000}
    with start_server(http_port=free_port(), **settings) as limited:
        port = limited.server.http_api.port
        too_many = post(port, {"reviews": ["a", "b", "c"]})
        too_long = post(port, {"reviews": ["fine", "word " * 300]})
        over_body = json.dumps({"review": "word " * 20_000}).encode()  # 100 kB
        declared = call(port, "POST", "/predict", over_body, JSON_HEADERS)
        chunked = call(
            port, "POST", "/predict", iter([over_body]), JSON_HEADERS, encode_chunked=True
        )
        with grpc.insecure_channel(limited.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as grpc_over:
                stub.Predict(sentiment_pb2.PredictRequest(reviews=["word " * 20_000]), timeout=30)
        body_limit = limited.server.http_api.max_body_bytes
        grpc_limit = limited.server.config.max_receive_message_bytes
    assert too_many.status == 400
    assert "the request has 3 reviews; the limit is 2" in too_many.error["message"]
    assert too_long.status == 400
    assert "review 1 is 1500 bytes; the limit is 1000 bytes" in too_long.error["message"]
    assert body_limit == grpc_limit
    for answer in (declared, chunked):
        assert answer.status == 413
        assert answer.error["code"] == "payload_too_large"
        assert f"the limit is {grpc_limit} bytes" in answer.error["message"]
    assert grpc_over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_full_queue_is_429_with_retry_after(start_server):
    model = HeldModel()
    settings = {"queue_capacity": 2, "max_batch_size": 1, "max_reviews_per_request": 2}
    with (
        start_server(model=model, http_port=free_port(), **settings) as held,
        ThreadPoolExecutor(2) as pool,
    ):
        port = held.server.http_api.port
        first = pool.submit(post, port, {"review": "x"})
        wait_until(lambda: model.calls, "the first review is in the model")
        queued = pool.submit(post, port, {"reviews": ["y", "z"]})
        wait_until(lambda: held.server.stats().queue_depth == 2, "two reviews are queued")
        refused = post(port, {"review": "one too many"})
        model.release.set()
        assert queued.result().json()["results"] == [
            {"sentiment": "Positive", "score": 0.75},
            {"sentiment": "Positive", "score": 0.75},
        ]
        assert first.result().status == 200
    assert refused.status == 429
    assert refused.error["code"] == "queue_full"
    assert "retry after about" in refused.error["message"]
    assert int(refused.headers["Retry-After"]) >= 1


def test_draining_answers_503_while_in_flight_requests_finish(start_server):
    model = HeldModel()
    with start_server(model=model, http_port=free_port()) as held, ThreadPoolExecutor(1) as pool:
        port = held.server.http_api.port
        assert call(port, "GET", "/readyz").status == 200
        in_flight = pool.submit(post, port, {"review": "x"})
        wait_until(lambda: model.calls, "the review is in the model")
        stopping = asyncio.run_coroutine_threadsafe(held.server.stop(grace_s=20), held._loop)
        wait_until(lambda: call(port, "GET", "/readyz").status == 503, "/readyz says 503")
        refused = post(port, {"review": "new"})
        alive = call(port, "GET", "/healthz")
        model.release.set()
        finished = in_flight.result()
        stopping.result(timeout=20)
        with pytest.raises(ConnectionRefusedError):
            call(port, "GET", "/healthz")
    assert (refused.status, refused.error["code"]) == (503, "unavailable")
    assert "shutting down" in refused.error["message"]
    assert alive.status == 200 and alive.json() == {"status": "ok"}
    assert finished.status == 200 and finished.json()["score"] == pytest.approx(0.75)
    assert model.calls == [["x"]]


def test_a_caller_who_hangs_up_has_its_queued_reviews_dropped(start_server):
    model = HeldModel()
    with start_server(model=model, http_port=free_port()) as held, ThreadPoolExecutor(1) as pool:
        port = held.server.http_api.port
        first = pool.submit(post, port, {"review": "x"})
        wait_until(lambda: model.calls, "the first review is in the model")
        leaving = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        leaving.request("POST", "/predict", json.dumps({"reviews": ["gone"] * 3}), JSON_HEADERS)
        wait_until(lambda: held.server.stats().queue_depth == 3, "three reviews are queued")
        leaving.close()
        wait_until(lambda: held.server.stats().queue_depth == 0, "the server saw the hang-up")
        model.release.set()
        assert first.result().status == 200
        assert post(port, {"review": "after"}).status == 200
    assert model.calls == [["x"], ["after"]]


# -- one batcher for HTTP and gRPC ---------------------------------------------------


def test_http_and_grpc_reviews_share_one_batch(start_server):
    model = HeldModel()
    with (
        start_server(model=model, http_port=free_port(), max_batch_size=8) as held,
        grpc.insecure_channel(held.target) as channel,
        ThreadPoolExecutor(1) as pool,
    ):
        port = held.server.http_api.port
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        blocker = stub.Predict.future(sentiment_pb2.PredictRequest(reviews=["x"]), timeout=30)
        wait_until(lambda: model.calls, "the blocker is in the model")
        over_http = pool.submit(post, port, {"reviews": ["from http 1", "from http 2"]})
        over_grpc = stub.Predict.future(
            sentiment_pb2.PredictRequest(reviews=["from grpc"]), timeout=30
        )
        wait_until(lambda: held.server.stats().queue_depth == 3, "both callers' reviews queue")
        model.release.set()
        assert [r["score"] for r in over_http.result().json()["results"]] == [0.75, 0.75]
        assert over_grpc.result().predictions[0].score == pytest.approx(0.75)
        blocker.result()
        stats = held.server.stats()
    assert len(model.calls) == 2
    assert sorted(model.calls[1]) == ["from grpc", "from http 1", "from http 2"]
    assert (stats.batches, stats.reviews, stats.max_batch_size_seen) == (2, 4, 3)


def test_concurrent_http_and_grpc_callers_each_get_their_own_scores(running, port, serving_model):
    reviews = [f"{REVIEWS[i % len(REVIEWS)]} take {i}" for i in range(24)]
    before = running.server.stats()
    with grpc.insecure_channel(running.target) as channel, ThreadPoolExecutor(8) as pool:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

        def over_grpc(review: str) -> float:
            request = sentiment_pb2.PredictRequest(reviews=[review])
            return stub.Predict(request, timeout=30).predictions[0].score

        def over_http(review: str) -> float:
            return post(port, {"review": review}).json()["score"]

        futures = [pool.submit(over_http if i % 2 else over_grpc, r) for i, r in enumerate(reviews)]
        scores = [f.result() for f in futures]
    after = running.server.stats()
    assert scores == pytest.approx([alone(serving_model, r) for r in reviews], abs=1e-5)
    assert after.reviews - before.reviews == len(reviews)


# -- health, contract, page ----------------------------------------------------------


def test_probes(port):
    assert call(port, "GET", "/healthz").json() == {"status": "ok"}
    ready = call(port, "GET", "/readyz")
    assert ready.status == 200
    assert ready.json() == {"status": "ready", "model": "imdb-lstm", "model_version": 1}


def test_openapi_document_is_the_file_and_lists_exactly_the_apps_routes(running, port):
    served = call(port, "GET", "/openapi.json")
    assert served.status == 200
    assert served.headers.get_content_type() == "application/json"
    assert served.body == OPENAPI_PATH.read_bytes()
    document = served.json()
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    app = running.server.http_api.app()
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"  # aiohttp adds HEAD to every GET by itself
    }
    # The served model's /infer is also a plain route (a faster look-up): the same endpoint.
    shortcut = ("POST", "/v2/models/imdb-lstm/infer")
    assert shortcut in routed and ("POST", "/v2/models/{model}/infer") in routed
    assert documented == routed - {shortcut}


def test_page_and_its_assets_are_served_from_the_package(port):
    page = call(port, "GET", "/")
    assert page.status == 200 and page.headers.get_content_type() == "text/html"
    html = page.body.decode()
    for text in (
        "IMDB Sentiment Analyzer",
        "<textarea",
        ">Analyze</button>",
        ">Try Positive Example</button>",
        ">Try Negative Example</button>",
        ">Clear</button>",
        'aria-live="polite"',
        'name="viewport"',
    ):
        assert text in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for name, content_type in (("app.css", "text/css"), ("app.js", "text/javascript")):
        asset = call(port, "GET", f"/static/{name}")
        assert asset.status == 200 and asset.headers.get_content_type() == content_type
        assert asset.body == (STATIC_DIR / name).read_bytes()
    for name in ("index.html", "app.css", "app.js"):  # no CDN: nothing loads from elsewhere
        assert "://" not in (STATIC_DIR / name).read_text()


# -- settings and start-up -----------------------------------------------------------


def test_http_port_is_a_setting_with_an_environment_twin():
    assert load_config([]).http_port == 0  # off
    assert load_config(["--http-port", "8080"]).http_port == 8080
    assert load_config([], environ={"SENTIMENT_HTTP_PORT": "8081"}).http_port == 8081
    with pytest.raises(ConfigError, match="--http-port 50051 is also the gRPC --port"):
        load_config(["--http-port", "50051", "--port", "50051"])
    with pytest.raises(ConfigError, match="SENTIMENT_HTTP_PORT='http' is not an integer"):
        load_config([], environ={"SENTIMENT_HTTP_PORT": "http"})


# The fixture's server thread re-raises the start-up error too; that is expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_busy_http_port_stops_start_up_with_a_named_error(start_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        server = start_server(http_port=busy_port)
        with pytest.raises(StartupError, match=f"cannot serve HTTP on 127.0.0.1:{busy_port}"):
            server.__enter__()
        server._thread.join(30)  # so its re-raised error is reported within this test


def test_no_http_listener_unless_asked(start_server):
    with start_server() as plain:
        assert plain.server.http_api is None
