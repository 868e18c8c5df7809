"""SentimentService on a real in-process server (port 0) over real gRPC channels."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from tests import helpers
from tests.fake_models import HeldModel
from tests.helpers import alone, occupy_blocking, wait_until

REVIEWS = [*helpers.REVIEWS, "terrible"]


@pytest.fixture(scope="module")
def stub(grpc_server):
    with grpc.insecure_channel(grpc_server) as channel:
        yield sentiment_pb2_grpc.SentimentServiceStub(channel)


def predict(stub, reviews, **kwargs) -> sentiment_pb2.PredictResponse:
    return stub.Predict(sentiment_pb2.PredictRequest(reviews=reviews), timeout=30, **kwargs)


def stream(stub, items: list[tuple[str, str]]) -> list[sentiment_pb2.StreamPredictResponse]:
    requests = (sentiment_pb2.StreamPredictRequest(id=i, review=r) for i, r in items)
    return list(stub.StreamPredict(requests, timeout=30))


def test_model_info_describes_the_served_version(stub):
    info = stub.GetModelInfo(sentiment_pb2.GetModelInfoRequest(), timeout=10)
    assert (info.name, info.version, info.preset, info.maxlen) == ("imdb-lstm", 1, "tiny", 40)
    assert info.vocabulary_size > 2
    assert info.decision_threshold == pytest.approx(0.5)
    assert info.metrics["test.roc_auc"] == pytest.approx(0.5)
    assert "validation.accuracy" in info.metrics


def test_predict_one_review(stub, serving_model):
    (prediction,) = predict(stub, ["a wonderful film"]).predictions
    assert prediction.score == pytest.approx(alone(serving_model, "a wonderful film"), abs=1e-5)
    expected = sentiment_pb2.POSITIVE if prediction.score >= 0.5 else sentiment_pb2.NEGATIVE
    assert prediction.label == expected
    assert prediction.model_version == 1


def test_predict_many_reviews_in_request_order(stub, serving_model):
    predictions = predict(stub, REVIEWS).predictions
    assert [p.score for p in predictions] == pytest.approx(
        [alone(serving_model, r) for r in REVIEWS], abs=1e-5
    )
    assert len({round(p.score, 4) for p in predictions}) > 1  # order is observable
    for p in predictions:
        assert p.label == (sentiment_pb2.POSITIVE if p.score >= 0.5 else sentiment_pb2.NEGATIVE)


@pytest.mark.parametrize(
    ("reviews", "message"),
    [
        ([], "the request has no reviews"),
        (["fine film", "  \n "], "review 1 is empty"),
        (["fine film", "great", "!!! <br />"], "review 2 has no words after removing markup"),
    ],
)
def test_predict_refuses_a_bad_review_by_index(stub, reviews, message):
    with pytest.raises(grpc.RpcError) as raised:
        predict(stub, reviews)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()


def test_request_limits_are_enforced(start_server):
    with start_server(max_reviews_per_request=3, max_review_bytes=100) as running:
        with grpc.insecure_channel(running.target) as channel:
            limited = sentiment_pb2_grpc.SentimentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as too_many:
                predict(limited, ["good"] * 4)
            with pytest.raises(grpc.RpcError) as too_big:
                predict(limited, ["good", "é" * 51])  # 102 bytes in UTF-8
            assert len(predict(limited, ["good"] * 3).predictions) == 3
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4 reviews; the limit is 3" in too_many.value.details()
    assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "review 1 is 102 bytes; the limit is 100 bytes" in too_big.value.details()


def test_stream_answers_in_order_with_ids(stub, serving_model):
    items = [(f"r{i}", review) for i, review in enumerate(REVIEWS * 3)]
    responses = stream(stub, items)
    assert [r.id for r in responses] == [i for i, _ in items]
    assert all(r.WhichOneof("result") == "prediction" for r in responses)
    assert [r.prediction.score for r in responses] == pytest.approx(
        [alone(serving_model, review) for _, review in items], abs=1e-5
    )


def test_a_bad_review_inside_a_stream_fails_alone(stub, serving_model):
    items = [("a", "great"), ("b", ""), ("c", "terrible"), ("d", "?!"), ("e", "superb")]
    responses = {r.id: r for r in stream(stub, items)}
    assert list(responses) == ["a", "b", "c", "d", "e"]
    for bad_id, reason in [("b", "is empty"), ("d", "has no words")]:
        error = responses[bad_id].error
        assert responses[bad_id].WhichOneof("result") == "error"
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert f"review id {bad_id!r} {reason}" in error.message
    for good_id, review in [("a", "great"), ("c", "terrible"), ("e", "superb")]:
        score = responses[good_id].prediction.score
        assert score == pytest.approx(alone(serving_model, review), abs=1e-5)


def test_concurrent_callers_each_get_their_own_results_and_share_batches(
    start_server, serving_model
):
    callers = 24
    own_reviews = [
        [f"{REVIEWS[(c + k) % len(REVIEWS)]} caller{c}" for k in range(1 + c % 3)]
        for c in range(callers)
    ]

    async def call_all(target):
        async with grpc.aio.insecure_channel(target) as channel:
            aio_stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            calls = [
                aio_stub.Predict(sentiment_pb2.PredictRequest(reviews=reviews), timeout=30)
                for reviews in own_reviews
            ]
            return await asyncio.gather(*calls)

    with start_server(max_batch_size=16, max_delay_ms=50) as running:
        responses = asyncio.run(call_all(running.target))
        stats = running.server.stats()
    for reviews, response in zip(own_reviews, responses, strict=True):
        assert [p.score for p in response.predictions] == pytest.approx(
            [alone(serving_model, r) for r in reviews], abs=1e-5
        )
    assert stats.reviews == sum(len(r) for r in own_reviews)
    assert stats.mean_batch_size > 1, "concurrent callers were never batched together"
    assert stats.max_batch_size_seen <= 16


def test_full_queue_is_resource_exhausted_with_a_retry_hint(start_server):
    model = HeldModel()
    settings = {"queue_capacity": 2, "max_batch_size": 1, "max_reviews_per_request": 2}
    with start_server(model=model, **settings) as running:
        with grpc.insecure_channel(running.target) as channel:
            held = sentiment_pb2_grpc.SentimentServiceStub(channel)
            first = occupy_blocking(held, model, "x")
            queued = held.Predict.future(
                sentiment_pb2.PredictRequest(reviews=["y", "z"]), timeout=30
            )
            wait_until(lambda: running.server.stats().queue_depth >= 2, "2 reviews are queued")
            with pytest.raises(grpc.RpcError) as refused:
                predict(held, ["one too many"])
            model.release.set()
            assert [p.score for p in queued.result().predictions] == pytest.approx([0.75, 0.75])
            assert first.result().predictions[0].model_version == 7
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry after about" in refused.value.details()
    trailers = dict(refused.value.trailing_metadata())
    assert int(trailers["grpc-retry-pushback-ms"]) >= 1


def test_expired_work_is_dropped_before_inference(start_server):
    model = HeldModel()
    with start_server(model=model, default_timeout_ms=200) as running:
        with grpc.insecure_channel(running.target) as channel:
            held = sentiment_pb2_grpc.SentimentServiceStub(channel)
            first = occupy_blocking(held, model, "x")
            with pytest.raises(grpc.RpcError) as server_default:
                held.Predict(sentiment_pb2.PredictRequest(reviews=["late"]))
            with pytest.raises(grpc.RpcError) as client_deadline:
                held.Predict(sentiment_pb2.PredictRequest(reviews=["later"]), timeout=0.1)
            model.release.set()
            # Even a review already in the model answers its caller by the deadline.
            assert first.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # Let the batcher reach the expired reviews, then check none reached the model.
            assert predict(held, ["after"]).predictions[0].score == pytest.approx(0.75)
    assert server_default.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client_deadline.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert model.calls == [["x"], ["after"]]


class FailingModel(HeldModel):
    def predict(self, reviews):
        self.calls.append(list(reviews))
        raise RuntimeError("device lost")


def test_a_failed_batch_fails_its_callers_with_internal_and_a_clear_message(start_server):
    with start_server(model=FailingModel()) as running:
        with grpc.insecure_channel(running.target) as channel:
            failing = sentiment_pb2_grpc.SentimentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as unary:
                predict(failing, ["a", "b"])
            (streamed,) = stream(failing, [("s1", "c")])
    assert unary.value.code() == grpc.StatusCode.INTERNAL
    assert "the model failed on a batch of 2 reviews: device lost" in unary.value.details()
    assert streamed.id == "s1" and streamed.error.code == grpc.StatusCode.INTERNAL.value[0]
    assert "device lost" in streamed.error.message


def test_a_full_queue_fails_only_the_stream_reviews_that_did_not_fit(start_server):
    model = HeldModel()
    settings = {"queue_capacity": 2, "max_batch_size": 2, "max_reviews_per_request": 2}
    with start_server(model=model, **settings) as running:
        with grpc.insecure_channel(running.target) as channel:
            held = sentiment_pb2_grpc.SentimentServiceStub(channel)
            first = occupy_blocking(held, model, "x")
            requests = [sentiment_pb2.StreamPredictRequest(id=str(i), review="r") for i in range(3)]
            responses = held.StreamPredict(iter(requests), timeout=30)
            wait_until(lambda: running.server.stats().rejected_full >= 1, "a review is refused")
            model.release.set()
            results = list(responses)
            first.result()
    assert [r.id for r in results] == ["0", "1", "2"]
    assert [r.WhichOneof("result") for r in results] == ["prediction", "prediction", "error"]
    assert results[2].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "retry after about" in results[2].error.message


def test_a_cancelled_stream_drops_its_queued_reviews(start_server):
    model = HeldModel()
    with start_server(model=model) as running:
        with grpc.insecure_channel(running.target) as channel:
            held = sentiment_pb2_grpc.SentimentServiceStub(channel)
            first = occupy_blocking(held, model, "x")
            requests = [sentiment_pb2.StreamPredictRequest(id="s", review="gone")] * 3
            leaving = held.StreamPredict(iter(requests), timeout=30)
            wait_until(lambda: running.server.stats().queue_depth >= 3, "3 reviews are queued")
            leaving.cancel()
            wait_until(
                lambda: running.server.stats().queue_depth == 0, "the server saw the cancellation"
            )
            model.release.set()
            first.result()
            assert predict(held, ["after"]).predictions[0].score == pytest.approx(0.75)
    assert model.calls == [["x"], ["after"]]


def test_a_message_over_the_receive_limit_is_refused_by_grpc(start_server):
    with start_server(max_reviews_per_request=2, max_review_bytes=1000) as running:
        with grpc.insecure_channel(running.target) as channel:
            limited = sentiment_pb2_grpc.SentimentServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                predict(limited, ["word " * 20_000])  # 100 kB, above 2 x 1000 B + overhead
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
