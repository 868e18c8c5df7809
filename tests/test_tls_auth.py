"""TLS, mutual TLS and bearer tokens on the real server, end to end with the client and CLI.

Certificates come from a throwaway CA made with openssl for each test session.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from imdb_sentiment_client import (
    AuthenticationError,
    SentimentClient,
    TlsConfig,
    UnavailableError,
)
from imdb_sentiment_client.cli import main as client_main
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.api.security import describe as describe_security
from server.config import ServerConfig, describe, load_config
from server.errors import ConfigError, StartupError
from server.main import create_server
from tests.conftest import server_config_for_tests
from tests.fake_sentiment_service import make_test_pki
from tests.model_spies import CountingModel

TOKEN = "tok-3f9a1c5e8b7d"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    """A second CA: its certificates must be refused by a server that trusts only the first."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    return make_test_pki(tmp_path_factory.mktemp("other-pki"))


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def tls_settings(pki, client_ca: bool = False) -> dict:
    settings = {"tls_cert": pki["server"], "tls_key": pki["server_key"]}
    if client_ca:
        settings["tls_client_ca"] = pki["ca"]
    return settings


def health_status(channel: grpc.Channel) -> int:
    request = health_pb2.HealthCheckRequest(service="sentiment.v1.SentimentService")
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


# --- transport ------------------------------------------------------------------------------


def test_plaintext_is_the_default_and_the_start_up_log_says_so(start_server, caplog):
    caplog.set_level(logging.INFO, logger="server")
    with start_server() as running, SentimentClient(running.target) as client:
        assert client.predict(["great"])[0].model_version == 1
    assert "transport: plaintext (no TLS)" in caplog.text
    assert "no authentication" in caplog.text


def test_tls_serves_clients_that_trust_its_ca_and_only_them(start_server, pki, other_pki, caplog):
    caplog.set_level(logging.INFO, logger="server")
    with start_server(**tls_settings(pki)) as running:
        with SentimentClient(running.target, tls=TlsConfig(str(pki["ca"]))) as client:
            assert client.predict(["great"])[0].model_version == 1
            assert [r.prediction.model_version for r in client.stream(["fine"])] == [1]
        with SentimentClient(running.target, retry=None) as plaintext:
            with pytest.raises(UnavailableError):
                plaintext.model_info(timeout_s=5)
        wrong_ca = TlsConfig(str(other_pki["ca"]))
        with SentimentClient(running.target, tls=wrong_ca, retry=None) as untrusting:
            with pytest.raises(UnavailableError):
                untrusting.model_info(timeout_s=5)
    assert f"transport: TLS with certificate {pki['server']}" in caplog.text


def test_mutual_tls_requires_a_client_certificate_from_the_configured_ca(
    start_server, pki, other_pki
):
    ca = str(pki["ca"])
    with start_server(**tls_settings(pki, client_ca=True)) as running:
        with SentimentClient(
            running.target, tls=TlsConfig(ca, str(pki["client"]), str(pki["client_key"]))
        ) as client:
            assert client.predict(["great"])[0].model_version == 1
        strangers = [
            TlsConfig(ca),  # no client certificate at all
            TlsConfig(ca, str(other_pki["client"]), str(other_pki["client_key"])),  # wrong CA
        ]
        for tls in strangers:
            with SentimentClient(running.target, tls=tls, retry=None) as stranger:
                with pytest.raises(UnavailableError):
                    stranger.model_info(timeout_s=5)


# --- bearer token ---------------------------------------------------------------------------


def test_the_right_token_opens_every_method(start_server, token_file):
    with start_server(auth_token_file=token_file) as running:
        with SentimentClient(running.target, token=TOKEN) as client:
            assert client.predict(["great", "awful"])[1].model_version == 1
            assert [r.id for r in client.stream([("a", "fine"), ("b", "dull")])] == ["a", "b"]
            assert client.model_info().name == "imdb-lstm"
            assert client.explain("a fine film").prediction.model_version == 1


@pytest.mark.parametrize(
    ("metadata", "complaint"),
    [
        ((), "none was sent"),
        ((("authorization", f"Bearer {TOKEN}x"),), "is not accepted"),
        ((("authorization", f"Basic {TOKEN}"),), "is not accepted"),
        ((("authorization", TOKEN),), "is not accepted"),
    ],
    ids=["missing", "wrong", "wrong-scheme", "no-scheme"],
)
def test_calls_without_the_token_are_unauthenticated_and_never_reach_the_model(
    start_server, serving_model, token_file, metadata, complaint
):
    model = CountingModel(serving_model)
    with start_server(model=model, auth_token_file=token_file) as running:
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            calls = [
                lambda: stub.Predict(
                    sentiment_pb2.PredictRequest(reviews=["great"]), metadata=metadata, timeout=10
                ),
                lambda: list(
                    stub.StreamPredict(
                        iter([sentiment_pb2.StreamPredictRequest(id="1", review="great")]),
                        metadata=metadata,
                        timeout=10,
                    )
                ),
                lambda: stub.GetModelInfo(
                    sentiment_pb2.GetModelInfoRequest(), metadata=metadata, timeout=10
                ),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert complaint in refused.value.details()
                assert TOKEN not in refused.value.details()
    assert model.calls == []


def test_the_scheme_is_case_insensitive_but_the_token_is_not(start_server, token_file):
    with start_server(auth_token_file=token_file) as running:
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            request = sentiment_pb2.GetModelInfoRequest()
            info = stub.GetModelInfo(request, metadata=(("authorization", f"bearer {TOKEN}"),))
            assert info.version == 1
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetModelInfo(request, metadata=(("authorization", f"Bearer {TOKEN.upper()}"),))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_stays_open_for_probes_but_reflection_needs_the_token(start_server, token_file):
    with start_server(auth_token_file=token_file) as running:
        with grpc.insecure_channel(running.target) as channel:
            assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as refused:
                ProtoReflectionDescriptorDatabase(channel).get_services()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_client_library_raises_authentication_error(start_server, token_file):
    with start_server(auth_token_file=token_file) as running:
        with SentimentClient(running.target, token="not-it", retry=None) as client:
            with pytest.raises(AuthenticationError) as caught:
                client.predict(["great"])
    assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED


def test_the_token_is_compared_in_constant_time(start_server, token_file, monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real_compare_digest = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real_compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    with start_server(auth_token_file=token_file) as running:
        with SentimentClient(running.target, token="guess", retry=None) as client:
            with pytest.raises(AuthenticationError):
                client.model_info()
    assert compared == [(b"guess", TOKEN.encode())]


def test_tls_token_and_client_certificate_together_through_the_cli(
    start_server, pki, token_file, capsys
):
    settings = {**tls_settings(pki, client_ca=True), "auth_token_file": token_file}
    with start_server(**settings) as running:
        argv = ["--target", running.target, "--tls-ca", str(pki["ca"])]
        argv += ["--tls-cert", str(pki["client"]), "--tls-key", str(pki["client_key"])]
        assert client_main([*argv, "--token-file", str(token_file), "info"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert client_main([*argv, "--no-retry", "info"]) == 1
        refused = capsys.readouterr().err
    assert info["name"] == "imdb-lstm"
    assert "UNAUTHENTICATED" in refused and TOKEN not in refused


# --- settings and secrets -------------------------------------------------------------------


def test_secrets_never_reach_the_log(start_server, pki, token_file, caplog):
    caplog.set_level(logging.DEBUG)
    settings = {**tls_settings(pki, client_ca=True), "auth_token_file": token_file}
    with start_server(**settings) as running:
        tls = TlsConfig(str(pki["ca"]), str(pki["client"]), str(pki["client_key"]))
        with SentimentClient(running.target, tls=tls, token="wrong-guess", retry=None) as client:
            with pytest.raises(AuthenticationError):
                client.predict(["great"])
        config = running._config
    key_pem = pki["server_key"].read_text().strip().splitlines()[1]  # a line of key material
    written = caplog.text + describe(config) + describe_security(config)
    assert "mutual TLS" in caplog.text  # the log did describe the security set-up
    assert "bearer token required" in caplog.text
    assert str(token_file) not in describe_security(config)
    for secret in (TOKEN, "wrong-guess", key_pem):
        assert secret not in written


def test_tls_settings_are_checked_together_and_named(tmp_path, pki):
    def load(*argv: str, **environ: str) -> ServerConfig:
        return load_config(["--model-dir", str(tmp_path), *argv], environ=environ)

    with pytest.raises(ConfigError, match="TLS needs both"):
        load("--tls-cert", str(pki["server"]))
    with pytest.raises(ConfigError, match="client certificates are checked only over TLS"):
        load("--tls-client-ca", str(pki["ca"]))
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=f"--tls-key='{missing}' does not exist"):
        load("--tls-cert", str(pki["server"]), "--tls-key", str(missing))
    with pytest.raises(ConfigError, match="SENTIMENT_AUTH_TOKEN_FILE=.* is not a file"):
        load(SENTIMENT_AUTH_TOKEN_FILE=str(tmp_path))
    config = load(SENTIMENT_TLS_CERT=str(pki["server"]), SENTIMENT_TLS_KEY=str(pki["server_key"]))
    assert (config.tls_cert, config.tls_key) == (pki["server"], pki["server_key"])


@pytest.mark.parametrize(
    ("problem", "complaint"),
    [
        ("mismatched-key", "are not a PEM certificate (chain) and its matching private key"),
        ("garbage-cert", "are not a PEM certificate (chain) and its matching private key"),
        ("garbage-ca", "holds no usable PEM CA certificate"),
        ("empty-token", "is empty"),
        ("two-tokens", "must hold one token"),
    ],
)
def test_bad_tls_files_or_token_fail_at_start_up_naming_the_file(
    tiny_model_dir, serving_model, pki, tmp_path, problem, complaint
):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    token = tmp_path / "token"
    settings = {
        "mismatched-key": {"tls_cert": pki["server"], "tls_key": pki["client_key"]},
        "garbage-cert": {"tls_cert": garbage, "tls_key": pki["server_key"]},
        "garbage-ca": {**tls_settings(pki), "tls_client_ca": garbage},
        "empty-token": {"auth_token_file": token},
        "two-tokens": {"auth_token_file": token},
    }[problem]
    token.write_text("one two\n" if problem == "two-tokens" else "\n")
    config = server_config_for_tests(tiny_model_dir, **settings)
    with pytest.raises(StartupError) as failed:
        asyncio.run(create_server(config, serving_model))
    assert complaint in str(failed.value)
    named = settings.get("tls_client_ca") or settings.get("tls_cert") or token
    assert str(named) in str(failed.value)
