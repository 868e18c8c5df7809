"""The bad-input matrix: each kind of bad input gets a precise status and message, fails alone,
and never costs the model any work or the server its health.

| input                                 | answer                                               |
|---------------------------------------|------------------------------------------------------|
| empty or whitespace-only review       | INVALID_ARGUMENT naming the review's index or id     |
| review that standardises to nothing   | INVALID_ARGUMENT saying why; never reaches the LSTM  |
| only unknown words                    | a normal result (every word is the OOV token)        |
| review over --max-review-bytes        | INVALID_ARGUMENT, before the model (tokeniser) sees it |
| more than --max-reviews-per-request   | INVALID_ARGUMENT                                     |
| message over gRPC's receive limit     | RESOURCE_EXHAUSTED from gRPC, at the deliberate limit |
| invalid UTF-8 on the wire             | INVALID_ARGUMENT naming the fault; server keeps going |
| arbitrary Unicode (emoji, RTL, NUL…)  | a result or INVALID_ARGUMENT, never a crash           |
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.config import ServerConfig
from tests.model_spies import CountingModel

PREDICT = "/sentiment.v1.SentimentService/Predict"
STREAM_PREDICT = "/sentiment.v1.SentimentService/StreamPredict"
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
WORDLESS = ["!!!", "<br /><br />", "... ?! <br/>", "😀👍🏽", "שלום עולם", "\x00"]


@pytest.fixture(scope="module")
def channel(grpc_server):
    with grpc.insecure_channel(grpc_server) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return sentiment_pb2_grpc.SentimentServiceStub(channel)


def predict(stub, reviews, **kwargs) -> sentiment_pb2.PredictResponse:
    return stub.Predict(sentiment_pb2.PredictRequest(reviews=reviews), timeout=30, **kwargs)


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def stream(stub, items) -> dict[str, sentiment_pb2.StreamPredictResponse]:
    requests = [sentiment_pb2.StreamPredictRequest(id=i, review=r) for i, r in items]
    responses = list(stub.StreamPredict(iter(requests), timeout=30))
    assert [r.id for r in responses] == [i for i, _ in items]  # one answer each, in order
    return {r.id: r for r in responses}


def assert_scored_alone(response, serving_model, review: str) -> None:
    assert response.WhichOneof("result") == "prediction", response
    assert response.prediction.score == pytest.approx(serving_model.predict([review])[0], abs=1e-5)


def assert_stream_error(response, code: grpc.StatusCode, *fragments: str) -> None:
    assert response.WhichOneof("result") == "error", response
    assert response.error.code == code.value[0]
    for fragment in fragments:
        assert fragment in response.error.message


# --- empty, wordless, unknown ---------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", " ", "\n\t \r\n", "\u00a0\u2003\u3000"])
def test_an_empty_or_whitespace_review_is_named_by_index_and_by_id(stub, serving_model, blank):
    error = refusal(lambda: predict(stub, ["a fine film", blank]))
    assert error.code() == INVALID_ARGUMENT
    assert error.details() == "review 1 is empty"
    answers = stream(stub, [("before", "great"), ("blank", blank), ("after", "awful")])
    assert_stream_error(answers["blank"], INVALID_ARGUMENT, "review id 'blank' is empty")
    assert_scored_alone(answers["before"], serving_model, "great")
    assert_scored_alone(answers["after"], serving_model, "awful")


@pytest.mark.parametrize("wordless", WORDLESS)
def test_a_review_that_standardises_to_nothing_is_refused_saying_why(stub, serving_model, wordless):
    error = refusal(lambda: predict(stub, ["great", wordless]))
    assert error.code() == INVALID_ARGUMENT
    assert error.details().startswith("review 1 has no words after removing markup and punct")
    assert "nothing to score" in error.details()
    answers = stream(stub, [("before", "great"), ("empty", wordless), ("after", "awful")])
    assert_stream_error(answers["empty"], INVALID_ARGUMENT, "review id 'empty' has no words")
    assert_scored_alone(answers["before"], serving_model, "great")
    assert_scored_alone(answers["after"], serving_model, "awful")


def test_a_fully_masked_row_never_reaches_the_lstm(stub, serving_model, monkeypatch):
    """All-padding rows break the cuDNN LSTM on a GPU; the model must drop them first."""
    seen: list[np.ndarray] = []
    real_score = serving_model.score

    def spy(ids):
        seen.append(np.asarray(ids))
        return real_score(ids)

    monkeypatch.setattr(serving_model, "score", spy)
    items = [(f"w{i}", w) for i, w in enumerate(WORDLESS)] + [("good", "a great film")]
    answers = stream(stub, items)
    predict(stub, ["great", "terrible plot"])
    assert answers["good"].WhichOneof("result") == "prediction"
    assert seen, "the LSTM was never called"
    for ids in seen:
        assert np.count_nonzero(ids, axis=1).min() > 0, f"an all-padding row reached it: {ids}"


def test_a_review_of_only_unknown_words_gets_a_normal_result(stub, serving_model):
    unknown = "zxqv blorf quux frobnicate"
    ids = serving_model.tokenize([unknown])
    assert set(ids[ids > 0].tolist()) == {1}, "the test needs words outside the vocabulary"
    (prediction,) = predict(stub, [unknown]).predictions
    assert prediction.score == pytest.approx(serving_model.predict([unknown])[0], abs=1e-5)
    assert 0.0 <= prediction.score <= 1.0


# --- size limits ----------------------------------------------------------------------------


def test_the_default_review_limit_is_sized_for_real_reviews():
    assert ServerConfig().max_review_bytes == 64 * 1024  # IMDB's longest review is ~14 kB


def test_a_5_mb_review_is_refused_with_the_default_limits(stub):
    error = refusal(lambda: predict(stub, ["fine", "word " * 1_048_576]))
    assert error.code() == INVALID_ARGUMENT
    assert error.details() == "review 1 is 5242880 bytes; the limit is 65536 bytes"


def test_an_oversize_review_is_refused_before_the_model_tokenises_it(start_server, serving_model):
    model = CountingModel(serving_model)
    with start_server(model=model, max_review_bytes=1000) as running:
        with grpc.insecure_channel(running.target) as channel:
            limited = sentiment_pb2_grpc.SentimentServiceStub(channel)
            oversize = "é" * 501  # 1002 bytes in UTF-8, though only 501 characters
            error = refusal(lambda: predict(limited, ["great", oversize]))
            answers = stream(limited, [("a", "great"), ("big", oversize), ("c", "dull")])
            at_the_limit = "a" * 1000
            assert len(predict(limited, [at_the_limit]).predictions) == 1
    assert error.code() == INVALID_ARGUMENT
    assert error.details() == "review 1 is 1002 bytes; the limit is 1000 bytes"
    assert_stream_error(answers["big"], INVALID_ARGUMENT, "review id 'big' is 1002 bytes")
    assert answers["a"].WhichOneof("result") == answers["c"].WhichOneof("result") == "prediction"
    # Only the fitting reviews ever reached the model (and with it the tokeniser).
    assert sorted(model.reviews_scored) == sorted(["great", "dull", at_the_limit])


def test_too_many_reviews_in_one_request_are_refused_before_the_model(start_server, serving_model):
    model = CountingModel(serving_model)
    with start_server(model=model, max_reviews_per_request=3) as running:
        with grpc.insecure_channel(running.target) as channel:
            limited = sentiment_pb2_grpc.SentimentServiceStub(channel)
            error = refusal(lambda: predict(limited, ["good"] * 4))
            assert len(predict(limited, ["good"] * 3).predictions) == 3
    assert error.code() == INVALID_ARGUMENT
    assert "the request has 4 reviews; the limit is 3" in error.details()
    assert model.calls and all(len(batch) <= 3 for batch in model.calls)
    assert len(model.reviews_scored) == 3


def test_a_message_over_the_receive_limit_is_refused_by_grpc_at_the_deliberate_limit(
    start_server, serving_model
):
    model = CountingModel(serving_model)
    settings = {"max_reviews_per_request": 2, "max_review_bytes": 1000}
    with start_server(model=model, **settings) as running:
        limit_bytes = running._config.max_receive_message_bytes
        with grpc.insecure_channel(running.target) as channel:
            limited = sentiment_pb2_grpc.SentimentServiceStub(channel)
            unary = refusal(lambda: predict(limited, ["word " * 20_000]))  # 100 kB
            big = sentiment_pb2.StreamPredictRequest(id="big", review="word " * 20_000)
            streamed = refusal(lambda: list(limited.StreamPredict(iter([big]), timeout=30)))
            assert len(predict(limited, ["still serving"]).predictions) == 1
    for error in (unary, streamed):
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # gRPC's own wording, with the limit the server set (not gRPC's 4 MiB default).
        assert "larger than max" in error.details() and f"vs. {limit_bytes}" in error.details()
    assert model.reviews_scored == ["still serving"]


# --- bytes that are not a valid message -----------------------------------------------------


def _raw_predict(channel):
    """Predict with no serializers: the test hands gRPC the exact bytes to send."""
    return channel.unary_unary(PREDICT, request_serializer=None, response_deserializer=None)


def _raw_stream(channel):
    return channel.stream_stream(
        STREAM_PREDICT, request_serializer=None, response_deserializer=None
    )


def _with_bad_utf8(message) -> bytes:
    """A valid serialised message whose string "XX" is replaced by two bytes that are not UTF-8."""
    wire = message.SerializeToString()
    assert wire.count(b"XX") == 1
    return wire.replace(b"XX", b"\xff\xfe")


@pytest.mark.parametrize(
    ("wire", "fault"),
    [
        (_with_bad_utf8(sentiment_pb2.PredictRequest(reviews=["fine", "XX"])), "bad UTF-8"),
        (b"\x0a\xff\xff\xff\xff\xff", "Error parsing message"),  # a length past the end
    ],
    ids=["invalid-utf8", "not-protobuf"],
)
def test_undecodable_bytes_get_invalid_argument_and_the_server_keeps_serving(
    channel, stub, serving_model, wire, fault
):
    error = refusal(lambda: _raw_predict(channel)(wire, timeout=10))
    assert error.code() == INVALID_ARGUMENT
    assert f"the request to {PREDICT} is not a valid protobuf message" in error.details()
    assert fault in error.details()
    (prediction,) = predict(stub, ["great"]).predictions
    assert prediction.score == pytest.approx(serving_model.predict(["great"])[0], abs=1e-5)


def test_invalid_utf8_inside_a_stream_ends_it_after_answering_what_came_before(
    channel, stub, serving_model
):
    good = sentiment_pb2.StreamPredictRequest(id="a", review="great").SerializeToString()
    bad = _with_bad_utf8(sentiment_pb2.StreamPredictRequest(id="b", review="XX"))
    later = sentiment_pb2.StreamPredictRequest(id="c", review="awful").SerializeToString()
    call = _raw_stream(channel)(iter([good, bad, later]), timeout=10)
    answered = []
    with pytest.raises(grpc.RpcError) as raised:
        for wire in call:
            answered.append(sentiment_pb2.StreamPredictResponse.FromString(wire))
    assert [a.id for a in answered] == ["a"]
    assert_scored_alone(answered[0], serving_model, "great")
    assert raised.value.code() == INVALID_ARGUMENT
    assert "stream message 1 to /sentiment.v1.SentimentService/StreamPredict" in (
        raised.value.details()
    )
    assert "bad UTF-8" in raised.value.details()
    assert len(stream(stub, [("next", "fine film")])) == 1  # the server is still serving


# --- arbitrary Unicode ----------------------------------------------------------------------

SPECIAL_TEXT = [
    "\x00",
    "great\x00film",
    "😀",
    "👩🏽‍🚀",  # a ZWJ sequence
    "🇫🇷",
    "مرحبا بالعالم",  # Arabic, right to left
    "\u202egreat film\u202c",  # right-to-left override around Latin text
    "שלום",
    "e\u0301\u0301\u0301\u0301",  # stacked combining marks
    "Z\u0351\u0352\u0353\u0354\u0355",
    "\ufeff",  # byte-order mark
    "\u200b\u200c\u200d",  # zero-width characters
    "\U0010ffff",  # the last code point
    "ＧＲＥＡＴ",  # full-width Latin
    "great",
    "awful",
    " ",
]
# Any text gRPC can carry: every code point but lone surrogates (not encodable as UTF-8).
unicode_reviews = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(SPECIAL_TEXT), min_size=1, max_size=12).map("".join),
    st.lists(st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=8)), max_size=12).map(
        " ".join
    ),
)
property_settings = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _acceptable(result_or_error, name: str) -> None:
    """A score in [0, 1], or INVALID_ARGUMENT naming the review: nothing else."""
    if isinstance(result_or_error, grpc.RpcError):
        assert result_or_error.code() == INVALID_ARGUMENT, result_or_error
        assert result_or_error.details().startswith(f"review {name} ")
    elif result_or_error.WhichOneof("result") == "error":
        assert result_or_error.error.code == INVALID_ARGUMENT.value[0], result_or_error
        assert result_or_error.error.message.startswith(f"review {name} ")
    else:
        assert 0.0 <= result_or_error.prediction.score <= 1.0


@property_settings
@given(review=unicode_reviews)
def test_any_unicode_review_gets_a_score_or_invalid_argument(stub, review):
    try:
        _, prediction = predict(stub, ["fine", review]).predictions
    except grpc.RpcError as error:
        _acceptable(error, "1")
    else:
        assert 0.0 <= prediction.score <= 1.0


@property_settings
@given(reviews=st.lists(unicode_reviews, min_size=1, max_size=4))
def test_any_unicode_in_a_stream_leaves_its_neighbours_intact(stub, serving_model, reviews):
    neighbours = {"first": "a great film", "last": "a dull and awful plot"}
    items = [("first", neighbours["first"])]
    items += [(f"odd{i}", review) for i, review in enumerate(reviews)]
    items += [("last", neighbours["last"])]
    answers = stream(stub, items)
    for name, review in neighbours.items():
        assert_scored_alone(answers[name], serving_model, review)
    for i in range(len(reviews)):
        _acceptable(answers[f"odd{i}"], f"id 'odd{i}'")
