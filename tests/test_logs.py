"""Logs and settings: one line per event, json format, request ids, secrets redacted, env twins."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.config import REDACTED, SETTINGS, ServerConfig, build_parser, describe
from server.main import main
from server.observability.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    configured_logging,
    request_id,
)

MARKER = "zebra-marker-7781"  # appears in review text only: must never reach a log line
TF_NATIVE_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable )")


def record(message: str, **extra) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "server.test", "levelname": "WARNING", "msg": message})
    made.__dict__.update(extra)
    return made


def failed_record() -> logging.LogRecord:
    try:
        raise ValueError("line one\nline two")
    except ValueError:
        return logging.LogRecord(
            "server.test", logging.ERROR, __file__, 1, "it broke", (), sys.exc_info()
        )


def test_json_lines_carry_time_level_logger_message_and_extra_fields():
    line = JsonFormatter().format(record("slow call", request_id="abc", duration_ms=12.5))
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message", "request_id", "duration_ms"}
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "WARNING",
        "server.test",
        "slow call",
    )
    assert (entry["request_id"], entry["duration_ms"]) == ("abc", 12.5)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    error_line = JsonFormatter().format(failed_record())
    assert "\n" not in error_line
    assert "ValueError: line one\nline two" in json.loads(error_line)["exception"]


def test_text_lines_are_one_line_with_extra_fields_and_the_traceback():
    line = TextFormatter().format(record("slow call", request_id="abc"))
    assert re.fullmatch(r"\S+ \S+ WARNING server\.test: slow call request_id=abc", line)
    error_line = TextFormatter().format(failed_record())
    assert "\n" not in error_line
    assert "it broke Traceback (most recent call last):" in error_line
    assert "ValueError: line one\\nline two" in error_line


def test_records_logged_during_a_call_carry_its_request_id():
    stream = io.StringIO()
    with configured_logging("INFO", "text", stream):
        token = request_id.set("call-1")
        try:
            logging.getLogger("server.anywhere").info("inside the call")
        finally:
            request_id.reset(token)
        logging.getLogger("server.anywhere").info("outside any call")
    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith("inside the call request_id=call-1")
    assert outside.endswith("outside any call")
    assert RequestIdFilter().filter(record("x", request_id="own"))  # an explicit id is kept


class FailingModel:
    """ServingModel's attributes; every batch fails, as a broken model would."""

    name, version, maxlen, vocabulary_size = "failing", 5, 40, 100
    decision_threshold, metrics, preset = 0.5, {}, "fake"

    def predict(self, reviews):
        raise RuntimeError("the model broke")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_calls_are_logged_with_request_ids_and_never_with_review_text(start_server):
    stream = io.StringIO()
    with (
        configured_logging("DEBUG", "json", stream),
        start_server(slow_request_ms=0.001) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        stub.Predict(
            sentiment_pb2.PredictRequest(reviews=[f"{MARKER} great"]),
            metadata=(("x-request-id", "req-slow"),),
            timeout=30,
        )
        for call_id, reviews in (
            ("req-bad", [f"{MARKER} fine", " "]),
            ("no spaces; please", [""]),
        ):
            with pytest.raises(grpc.RpcError):
                stub.Predict(
                    sentiment_pb2.PredictRequest(reviews=reviews),
                    metadata=(("x-request-id", call_id),),
                    timeout=30,
                )
        with pytest.raises(grpc.RpcError):
            stub.Predict(sentiment_pb2.PredictRequest(reviews=[]), timeout=30)
    text = stream.getvalue()
    entries = json_lines(text)
    calls = [e for e in entries if e["logger"] == "server.calls"]
    slow, bad, bad_id, no_id = calls
    assert (slow["message"], slow["request_id"], slow["code"]) == ("slow call", "req-slow", "OK")
    assert slow["method"] == "/sentiment.v1.SentimentService/Predict"
    assert (bad["level"], bad["code"], bad["request_id"]) == (
        "WARNING",
        "INVALID_ARGUMENT",
        "req-bad",
    )
    assert bad["message"] == "call failed: review 1 is empty"
    for generated in (bad_id, no_id):  # an unusable or missing id is replaced by a fresh one
        assert re.fullmatch(r"[0-9a-f]{32}", generated["request_id"])
    assert bad_id["request_id"] != no_id["request_id"]
    assert MARKER not in text


def test_a_failed_batch_logs_an_error_per_call_and_the_batch_without_a_call_id(start_server):
    stream = io.StringIO()
    with (
        configured_logging("INFO", "json", stream),
        start_server(model=FailingModel()) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(
                sentiment_pb2.PredictRequest(reviews=["x"]),
                metadata=(("x-request-id", "req-first"),),
                timeout=30,
            )
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    entries = json_lines(stream.getvalue())
    (batch,) = [e for e in entries if e["message"].startswith("model failed on a batch")]
    (call,) = [e for e in entries if e["logger"] == "server.calls"]
    assert "RuntimeError: the model broke" in batch["exception"]
    assert "request_id" not in batch  # the batch loop serves every caller, not the first one
    assert (call["level"], call["code"], call["request_id"]) == ("ERROR", "INTERNAL", "req-first")


@dataclasses.dataclass(frozen=True)
class SecretSettings:
    port: int = 1
    auth_token_file: str = "/run/secrets/token"
    tls_key: str = "/run/secrets/tls.key"
    client_secret: str = "s3cr3t"
    db_password: str = "hunter2"
    api_key_file: str | None = None


def test_describe_redacts_every_setting_named_like_a_secret():
    line = describe(SecretSettings())
    assert line.split() == [
        "port=1",
        f"auth_token_file={REDACTED}",
        f"tls_key={REDACTED}",
        f"client_secret={REDACTED}",
        f"db_password={REDACTED}",
        "api_key_file=None",  # unset: nothing to hide, and saying so helps
    ]
    config = ServerConfig(tls_key=Path("/etc/tls/server.key"), auth_token_file=Path("/run/t"))
    assert "/etc/tls/server.key" not in describe(config) and "/run/t" not in describe(config)
    assert f"tls_key={REDACTED}" in describe(config)
    assert "tls_cert=None" in describe(config)  # a certificate is public: shown


def test_start_up_logs_the_effective_settings_as_json_with_secrets_redacted(tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text("do-not-log-me\n")
    empty = tmp_path / "models"
    empty.mkdir()
    argv = ["--model-dir", str(empty), "--port", "0", "--host", "127.0.0.1"]
    argv += ["--auth-token-file", str(token_file), "--log-format", "json", "--grace-s", "3"]
    assert main(argv) == 1  # no model: it cannot serve, but it said how it was set up
    err = capsys.readouterr().err
    python_lines = [line for line in err.splitlines() if not TF_NATIVE_LINE.match(line)]
    entries = [json.loads(line) for line in python_lines]  # every one of ours is JSON
    (settings,) = [e for e in entries if e["message"].startswith("settings: ")]
    assert "grace_s=3.0" in settings["message"]
    assert f"auth_token_file={REDACTED}" in settings["message"]
    assert "do-not-log-me" not in err and str(token_file) not in err
    assert any(
        e["level"] == "ERROR" and "no complete model version" in e["message"] for e in entries
    )


def test_every_flag_has_an_environment_twin_in_the_help():
    actions = [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in actions} == {s.field for s in SETTINGS}
    for action in actions:
        assert f"[env SENTIMENT_{action.dest.upper()}]" in action.help, action.option_strings


def test_the_installed_command_lists_each_environment_variable_in_its_help():
    command = shutil.which("sentiment-server", path=str(Path(sys.executable).parent))
    assert command is not None, "sentiment-server is not installed in this environment"
    result = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    for setting in SETTINGS:
        assert f"{setting.flag} " in help_text and f"[env {setting.env}]" in help_text
    assert "--log-format text|json" in help_text and "SENTIMENT_POLL_S" in help_text
