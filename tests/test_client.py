"""Tests for the client library: errors, values, stream bookkeeping, sync and asyncio clients."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import socket
import time

import grpc
import pytest

from imdb_sentiment_client import (
    AsyncSentimentClient,
    DeadlineExceededError,
    InvalidReviewError,
    OverloadedError,
    ProtocolError,
    RetryPolicy,
    SentimentClient,
    SentimentError,
    TlsConfig,
    UnavailableError,
)
from imdb_sentiment_client.config import ClientConfig
from imdb_sentiment_client.errors import AuthenticationError, error_for_status, from_rpc_error
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2
from imdb_sentiment_client.stream_ledger import StreamLedger
from imdb_sentiment_client.types import (
    Prediction,
    prediction_from_proto,
    predictions_from_proto,
    review_list,
    split_review,
)
from tests.fake_sentiment_service import (
    MODEL_VERSION,
    FakeSentimentService,
    closed_port,
    make_test_pki,
    mtls_server_credentials,
    serve,
)

# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, cls",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidReviewError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, OverloadedError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.UNAUTHENTICATED, AuthenticationError),
        (grpc.StatusCode.PERMISSION_DENIED, AuthenticationError),
        (grpc.StatusCode.INTERNAL, SentimentError),
    ],
)
def test_error_for_status_picks_the_class_and_keeps_code_and_message(code, cls):
    error = error_for_status(code, "why")
    assert type(error) is cls
    assert error.code is code
    assert error.message == "why"
    assert str(error) == f"{code.name}: why"


def test_error_for_status_takes_proto_numbers_and_survives_unknown_ones():
    assert type(error_for_status(3, "bad")) is InvalidReviewError
    unknown = error_for_status(999, "??")
    assert type(unknown) is SentimentError
    assert unknown.code is grpc.StatusCode.UNKNOWN


def test_from_rpc_error_without_code_is_unknown():
    error = from_rpc_error(grpc.RpcError())
    assert type(error) is SentimentError
    assert error.code is grpc.StatusCode.UNKNOWN


# --- values ---------------------------------------------------------------------------------


def test_review_list_refuses_a_bare_string_and_non_strings():
    with pytest.raises(TypeError, match="wrap a single review"):
        review_list("one review")
    with pytest.raises(TypeError, match="review 1 is a int"):
        review_list(["fine", 3])
    assert review_list(iter(["a", "b"])) == ["a", "b"]


def test_split_review_accepts_text_or_id_text_pairs():
    assert split_review("text") == (None, "text")
    assert split_review(("r1", "text")) == ("r1", "text")
    assert split_review((17, "text")) == ("17", "text")
    with pytest.raises(TypeError, match="str or an \\(id, text\\) pair"):
        split_review(("r1", "text", "extra"))


def test_prediction_without_label_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="without a label"):
        prediction_from_proto(sentiment_pb2.Prediction(score=0.5))


def test_prediction_count_must_match_the_reviews_sent():
    response = sentiment_pb2.PredictResponse(
        predictions=[sentiment_pb2.Prediction(label=sentiment_pb2.POSITIVE, score=0.9)]
    )
    assert predictions_from_proto(response, 1) == [Prediction("POSITIVE", pytest.approx(0.9), 0)]
    with pytest.raises(ProtocolError, match="sent 2 reviews but got 1"):
        predictions_from_proto(response, 2)


# --- stream ledger --------------------------------------------------------------------------


def _answer(wire_id: str) -> sentiment_pb2.StreamPredictResponse:
    return sentiment_pb2.StreamPredictResponse(
        id=wire_id, prediction=sentiment_pb2.Prediction(label=sentiment_pb2.NEGATIVE, score=0.2)
    )


def test_ledger_holds_early_answers_until_earlier_reviews_are_answered():
    ledger = StreamLedger()
    wire_ids = [ledger.sent(caller_id) for caller_id in ("a", "b", "c")]
    assert ledger.received(_answer(wire_ids[2])) == []
    assert ledger.received(_answer(wire_ids[1])) == []
    ready = ledger.received(_answer(wire_ids[0]))
    assert [r.id for r in ready] == ["a", "b", "c"]
    assert ledger.unanswered == 0


def test_ledger_refuses_unknown_and_repeated_ids():
    ledger = StreamLedger()
    wire_id = ledger.sent(None)
    with pytest.raises(ProtocolError, match="unknown or repeated id 'nope'"):
        ledger.received(_answer("nope"))
    ledger.received(_answer(wire_id))
    with pytest.raises(ProtocolError, match="repeated"):
        ledger.received(_answer(wire_id))


def test_ledger_counts_time_owed_only_while_the_caller_waits():
    ledger = StreamLedger()
    assert ledger.overdue_s(0.0, time.monotonic() + 100) == 0.0  # nothing owed
    wire_id = ledger.sent(None)
    now = time.monotonic()
    assert ledger.overdue_s(now - 50, now + 5) == pytest.approx(5, abs=0.5)
    assert ledger.overdue_s(now + 3, now + 5) == pytest.approx(2)  # the caller began later
    ledger.received(_answer(wire_id))
    assert ledger.overdue_s(now, now + 100) == 0.0


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"timeout_s": 0}, "timeout_s"),
        ({"stream_timeout_s": float("inf")}, "stream_timeout_s"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"target": " "}, "target"),
        ({"token": "two\nlines"}, "token"),
        ({"load_balancing": "least_request"}, "load_balancing must be one of"),
        ({"max_reconnect_backoff_s": 0}, "max_reconnect_backoff_s"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, named):
    with pytest.raises(ValueError, match=named):
        ClientConfig(**kwargs)


def test_retry_policy_limits_and_service_config():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=6)
    with pytest.raises(ValueError, match="initial_backoff_s"):
        RetryPolicy(initial_backoff_s=-1)
    options = dict(ClientConfig(retry=RetryPolicy(max_attempts=3)).channel_options())
    assert options["grpc.enable_retries"] == 1
    policy = json.loads(options["grpc.service_config"])["methodConfig"][0]
    assert policy["name"] == [{"service": "sentiment.v1.SentimentService"}]
    assert policy["retryPolicy"]["maxAttempts"] == 3
    assert set(policy["retryPolicy"]["retryableStatusCodes"]) == {
        "UNAVAILABLE",
        "RESOURCE_EXHAUSTED",
    }
    # Without a policy, gRPC's transparent retries stay on: only calls the server never got.
    without = dict(ClientConfig(retry=None).channel_options())
    assert without["grpc.enable_retries"] == 1
    assert "methodConfig" not in json.loads(without["grpc.service_config"])


def test_load_balancing_and_reconnect_backoff_reach_the_channel_options():
    options = dict(ClientConfig().channel_options())
    service_config = json.loads(options["grpc.service_config"])
    assert service_config["loadBalancingConfig"] == [{"pick_first": {}}]  # gRPC's default
    assert options["grpc.max_reconnect_backoff_ms"] == 5000  # not gRPC's 120 s
    assert options["grpc.initial_reconnect_backoff_ms"] == 100  # not gRPC's 1 s
    config = ClientConfig(load_balancing="round_robin", max_reconnect_backoff_s=0.05)
    options = dict(config.channel_options())
    service_config = json.loads(options["grpc.service_config"])
    assert service_config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert service_config["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 5
    assert options["grpc.initial_reconnect_backoff_ms"] == 50  # never above the cap
    assert options["grpc.max_reconnect_backoff_ms"] == 50


def test_tls_needs_cert_and_key_together():
    with pytest.raises(ValueError, match="certificate and its key"):
        TlsConfig(cert_path="client.pem")


# --- sync client against a fake service ------------------------------------------------------


@contextlib.contextmanager
def fake_client(service: FakeSentimentService | None = None, **settings):
    with serve(service or FakeSentimentService()) as target:
        with SentimentClient(target, **settings) as client:
            yield client


def test_predict_returns_one_prediction_per_review_in_order():
    with fake_client() as client:
        predictions = client.predict(["a good film", "a bad film", "good good"])
    assert [p.label for p in predictions] == ["POSITIVE", "NEGATIVE", "POSITIVE"]
    assert predictions[1].score == pytest.approx(0.1)
    assert {p.model_version for p in predictions} == {MODEL_VERSION}
    assert {p.id for p in predictions} == {None}


def test_per_call_deadlines_are_checked_by_name():
    with fake_client() as client:
        with pytest.raises(ValueError, match="timeout_s must be a positive number"):
            client.predict(["good"], timeout_s=0)
        with pytest.raises(ValueError, match="stream_timeout_s"):
            next(client.stream(["good"], stream_timeout_s=-1))


def test_predict_of_nothing_makes_no_call():
    service = FakeSentimentService()
    with fake_client(service) as client:
        assert client.predict([]) == []
    assert service.predict_calls == 0


def test_predict_bad_review_raises_invalid_review_with_code_and_message():
    with fake_client() as client, pytest.raises(InvalidReviewError) as caught:
        client.predict(["fine", "  "])
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "review 1 is empty"


def test_model_info():
    with fake_client() as client:
        info = client.model_info()
    assert (info.name, info.version, info.preset) == ("fake", MODEL_VERSION, "tiny")
    assert info.metrics == {"test.accuracy": pytest.approx(0.875)}


def test_unreachable_server_raises_unavailable():
    with SentimentClient(f"127.0.0.1:{closed_port()}", retry=None) as client:
        with pytest.raises(UnavailableError) as caught:
            client.predict(["anything"])
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


def test_retries_unavailable_and_overloaded_within_the_deadline():
    service = FakeSentimentService(
        fail_first=[grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
    )
    fast = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)
    with fake_client(service, retry=fast) as client:
        assert [p.label for p in client.predict(["good"])] == ["POSITIVE"]
    assert service.predict_calls == 3


def test_retries_stop_at_the_callers_deadline():
    service = FakeSentimentService(fail_first=[grpc.StatusCode.UNAVAILABLE] * 10)
    slow = RetryPolicy(max_attempts=5, initial_backoff_s=2.0, max_backoff_s=2.0)
    with fake_client(service, retry=slow, timeout_s=0.3) as client:
        started = time.monotonic()
        with pytest.raises((DeadlineExceededError, UnavailableError)):
            client.predict(["good"])
        assert time.monotonic() - started < 1.5  # not the 8 s that 4 full backoffs would take


def test_without_retries_the_first_failure_is_raised():
    service = FakeSentimentService(fail_first=[grpc.StatusCode.RESOURCE_EXHAUSTED])
    with fake_client(service, retry=None) as client, pytest.raises(OverloadedError):
        client.predict(["good"])
    assert service.predict_calls == 1


@pytest.mark.parametrize("load_balancing, spread", [("pick_first", False), ("round_robin", True)])
def test_round_robin_spreads_calls_over_every_address_of_the_target(load_balancing, spread):
    services = [FakeSentimentService(), FakeSentimentService()]
    with serve(services[0]) as first, serve(services[1]) as second:
        target = f"ipv4:{first},{second}"
        with SentimentClient(target, load_balancing=load_balancing) as client:
            for _ in range(20):
                client.predict(["good"])
    calls = sorted(service.predict_calls for service in services)
    if spread:  # in turn, once both connections are up (the second may connect a call later)
        assert calls[0] >= 5 and sum(calls) == 20, calls
    else:
        assert calls == [0, 20]


def _connection_gaps(max_reconnect_backoff_s: float, window_s: float) -> list[float]:
    """The seconds between a client's attempts to reconnect to a lost server within
    `window_s` (the first: from when the server is back): a listener on the server's port
    accepts each attempt and closes it at once, so every attempt fails."""
    port = closed_port()
    with SentimentClient(
        f"127.0.0.1:{port}", retry=None, max_reconnect_backoff_s=max_reconnect_backoff_s
    ) as client:
        with pytest.raises(UnavailableError):
            client.predict(["good"])  # the first attempt: refused, the backoff begins
        attempts = []
        with socket.create_server(("127.0.0.1", port)) as listener:
            listener.settimeout(0.05)
            attempts.append(time.monotonic())
            ends_s = attempts[0] + window_s
            while time.monotonic() < ends_s:
                with contextlib.suppress(TimeoutError):
                    connection, _ = listener.accept()
                    connection.close()
                    attempts.append(time.monotonic())
    return [later - earlier for earlier, later in itertools.pairwise(attempts)]


def test_a_lost_server_is_tried_again_at_least_every_max_reconnect_backoff_s():
    # 0.25 s apart (jitter: +-20%): about 9 attempts in 2.5 s, 5 leaving room for a busy
    # machine. Uncapped, the backoff grows 1.6x from 0.1 s: past 0.6 s by its sixth attempt.
    capped = _connection_gaps(max_reconnect_backoff_s=0.25, window_s=2.5)
    assert len(capped) >= 5 and max(capped) < 0.6, capped
    uncapped = _connection_gaps(max_reconnect_backoff_s=120, window_s=4)
    assert max(uncapped) > 0.6, uncapped


def test_token_is_sent_as_bearer_metadata_on_every_call():
    service = FakeSentimentService()
    with fake_client(service, token="s3cret") as client:
        client.predict(["good"])
        client.model_info()
        list(client.stream(["good"]))
    assert [m.get("authorization") for m in service.metadata] == ["Bearer s3cret"] * 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def test_mutual_tls_with_a_client_certificate(pki):
    tls = TlsConfig(str(pki["ca"]), str(pki["client"]), str(pki["client_key"]))
    with serve(FakeSentimentService(), mtls_server_credentials(pki)) as target:
        with SentimentClient(target, tls=tls) as client:
            assert client.model_info().version == MODEL_VERSION


def test_mutual_tls_server_refuses_a_client_without_certificate(pki):
    with serve(FakeSentimentService(), mtls_server_credentials(pki)) as target:
        with SentimentClient(target, tls=TlsConfig(str(pki["ca"])), retry=None) as client:
            with pytest.raises(UnavailableError):
                client.model_info()


def test_unreadable_certificate_file_is_an_os_error_naming_it(tmp_path):
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(FileNotFoundError, match="missing-ca.pem"):
        SentimentClient("127.0.0.1:1", tls=TlsConfig(str(missing)))


def test_stream_pipelines_and_returns_results_in_input_order():
    # The fake answers only once it holds 16 reviews, and answers those last-first:
    # a client waiting for each answer before sending would stall, and one that
    # trusted arrival order would come back shuffled.
    service = FakeSentimentService(stream_batch=16, reverse_batches=True)
    reviews = [f"review {i} " + ("good" if i % 3 else "bad") for i in range(100)]
    with fake_client(service, max_in_flight=32, timeout_s=5) as client:
        results = list(client.stream(reviews))
    assert len(results) == 100
    assert [r.prediction.label for r in results] == [
        "POSITIVE" if i % 3 else "NEGATIVE" for i in range(100)
    ]


def test_stream_echoes_caller_ids_and_reports_bad_reviews_in_place():
    with fake_client() as client:
        results = list(client.stream([("a", "good"), ("b", ""), ("a", "bad")]))
    assert [r.id for r in results] == ["a", "b", "a"]
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, InvalidReviewError)
    assert results[1].error.message == "review is empty"
    assert results[2].unwrap().label == "NEGATIVE"
    with pytest.raises(InvalidReviewError):
        results[1].unwrap()


def test_stream_raises_deadline_exceeded_when_the_server_stops_answering():
    service = FakeSentimentService(stall_after=2)
    with fake_client(service, timeout_s=0.5) as client:
        results = []
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="no stream result for 0.5s"):
            for result in client.stream(["good"] * 10):
                results.append(result)
    assert len(results) == 2
    assert time.monotonic() - started < 5


def test_stream_window_smaller_than_server_batch_times_out_instead_of_hanging():
    service = FakeSentimentService(stream_batch=8)
    with fake_client(service, max_in_flight=4, timeout_s=0.5) as client:
        with pytest.raises(DeadlineExceededError):
            list(client.stream(["good"] * 20))
    assert service.stream_requests == 4  # the window held back the rest


def test_stream_input_error_is_raised_after_the_reviews_before_it():
    def reviews():
        yield "good"
        yield "bad"
        raise OSError("disk on fire")

    with fake_client() as client:
        results = []
        with pytest.raises(OSError, match="disk on fire"):
            for result in client.stream(reviews()):
                results.append(result)
    assert [r.prediction.label for r in results] == ["POSITIVE", "NEGATIVE"]


def test_leaving_a_stream_early_cancels_it_and_the_client_still_works():
    with fake_client(max_in_flight=8) as client:
        stream = client.stream(f"good {i}" for i in range(10_000))
        assert next(stream).ok
        stream.close()
        assert [p.label for p in client.predict(["good"])] == ["POSITIVE"]


# --- asyncio client ---------------------------------------------------------------------------


def test_async_client_predicts_streams_and_describes_the_model():
    service = FakeSentimentService(stream_batch=4, reverse_batches=True)

    async def reviews():
        for i in range(30):
            yield (str(i), "good" if i % 2 else "bad")

    async def run(target):
        async with AsyncSentimentClient(target, max_in_flight=8) as client:
            predictions = await client.predict(["good", "bad"])
            info = await client.model_info()
            results = [r async for r in client.stream(reviews())]
        return predictions, info, results

    with serve(service) as target:
        predictions, info, results = asyncio.run(run(target))
    assert [p.label for p in predictions] == ["POSITIVE", "NEGATIVE"]
    assert info.version == MODEL_VERSION
    assert [r.id for r in results] == [str(i) for i in range(30)]
    assert [r.prediction.label for r in results] == [
        "POSITIVE" if i % 2 else "NEGATIVE" for i in range(30)
    ]


def test_async_client_translates_errors_and_times_out_stalled_streams():
    async def run(target):
        async with AsyncSentimentClient(target, timeout_s=0.5) as client:
            with pytest.raises(InvalidReviewError, match="review 0 is empty"):
                await client.predict([""])
            results = []
            with pytest.raises(DeadlineExceededError):
                async for result in client.stream(["good"] * 10):
                    results.append(result)
            return results

    with serve(FakeSentimentService(stall_after=3)) as target:
        assert len(asyncio.run(run(target))) == 3


def test_async_client_unreachable_server_raises_unavailable():
    async def run():
        async with AsyncSentimentClient(f"127.0.0.1:{closed_port()}", retry=None) as client:
            await client.model_info()

    with pytest.raises(UnavailableError):
        asyncio.run(run())
