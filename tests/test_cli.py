"""Tests for sentiment-client: input and output formats, main(argv), and the installed command."""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imdb_sentiment_client import SentimentClient
from imdb_sentiment_client.cli import ENVIRONMENT, build_parser, main
from imdb_sentiment_client.cli_io import InputError, ResultWriter, read_jsonl, read_lines
from imdb_sentiment_client.errors import error_for_status
from imdb_sentiment_client.types import ModelInfo, Prediction, StreamResult
from tests.fake_sentiment_service import (
    FakeSentimentService,
    closed_port,
    make_test_pki,
    mtls_server_credentials,
    serve,
)

POSITIVE_REVIEW = "a great wonderful superb film, loved it"
NEGATIVE_REVIEW = "an awful boring terrible waste, hated it"

# --- reading reviews --------------------------------------------------------------------------


def test_read_lines_keeps_blank_lines_so_results_match_lines():
    lines = io.StringIO("first\r\n\nthird\n")
    assert list(read_lines(lines, "in.txt")) == ["first", "", "third"]


def test_read_lines_names_the_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine\n" * 3 + b"caf\xe9\n")
    with open(path, encoding="utf-8") as file, pytest.raises(InputError, match="not UTF-8"):
        list(read_lines(file, str(path)))


def test_read_jsonl_takes_id_and_text_and_skips_blank_lines():
    lines = io.StringIO('{"id": "a", "text": "one"}\n\n{"id": 7, "text": "two"}\n{"text": "x"}\n')
    assert list(read_jsonl(lines, "in.jsonl")) == [("a", "one"), ("7", "two"), (None, "x")]


@pytest.mark.parametrize(
    "line, complaint",
    [
        ("not json", "in.jsonl:2: not JSON"),
        ('["text"]', 'in.jsonl:2: expected an object with a string "text"'),
        ('{"id": 1}', 'in.jsonl:2: expected an object with a string "text"'),
        ('{"id": [1], "text": "x"}', 'in.jsonl:2: "id" must be a string or an integer'),
    ],
)
def test_read_jsonl_names_file_and_line_of_bad_records(line, complaint):
    lines = io.StringIO('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(InputError) as caught:
        list(read_jsonl(lines, "in.jsonl"))
    assert str(caught.value).startswith(complaint)


# --- writing results ----------------------------------------------------------------------------


def test_json_lines_carry_label_score_and_id_when_there_is_one():
    out = io.StringIO()
    writer = ResultWriter(out, "json")
    writer.prediction(Prediction("POSITIVE", 0.912345678, 3))
    writer.stream_result(StreamResult("r2", Prediction("NEGATIVE", 0.25, 3, "r2")))
    writer.stream_result(StreamResult("r3", error=error_for_status(3, "review is empty")))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records == [
        {"label": "POSITIVE", "score": 0.912346},
        {"id": "r2", "label": "NEGATIVE", "score": 0.25},
        {"id": "r3", "error": {"code": "INVALID_ARGUMENT", "message": "review is empty"}},
    ]


def test_table_has_a_header_and_one_aligned_row_per_result():
    out = io.StringIO()
    writer = ResultWriter(out, "table", with_ids=True)
    writer.prediction(Prediction("POSITIVE", 0.9, 1, "a"))
    writer.stream_result(StreamResult("b", error=error_for_status(3, "empty")))
    header, first, second = out.getvalue().splitlines()
    assert header.split() == ["#", "ID", "LABEL", "SCORE"]
    assert first.split() == ["1", "a", "POSITIVE", "0.9000"]
    assert second.split() == ["2", "b", "ERROR", "INVALID_ARGUMENT:", "empty"]
    assert header.index("LABEL") == first.index("POSITIVE") == second.index("ERROR")


def test_model_info_as_json_and_as_table():
    info = ModelInfo("imdb-lstm", 2, 200, 20000, 0.5, "default", {"test.accuracy": 0.88})
    out = io.StringIO()
    ResultWriter(out, "json").model_info(info)
    assert json.loads(out.getvalue())["metrics"] == {"test.accuracy": 0.88}
    out = io.StringIO()
    ResultWriter(out, "table").model_info(info)
    assert "metrics.test.accuracy  0.8800" in out.getvalue()


# --- main(argv) without a server ----------------------------------------------------------------


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sentiment-client: error: ")
    return lines[0]


@pytest.mark.parametrize(
    "argv, complaint",
    [
        ([], "required: COMMAND"),
        (["predict"], "TEXT arguments or with --file"),
        (["predict", "x", "--file", "f.txt"], "not both"),
        (["predict", "--jsonl", "x"], "--jsonl reads --file"),
        (["--timeout", "0", "info"], "--timeout: expected a positive float, got '0'"),
        (["stream", "--max-in-flight", "-3"], "--max-in-flight: expected a positive int"),
        (["--format", "xml", "info"], "invalid choice: 'xml'"),
        (["predict", "--file", "/does/not/exist.txt"], "/does/not/exist.txt: No such file"),
        (["--tls-cert", "c.pem", "info"], "certificate and its key go together"),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv, complaint):
    assert main(argv) == 2
    assert complaint in _one_error_line(capsys)


def test_unreachable_server_exits_1_naming_the_status_and_target(capsys):
    target = f"127.0.0.1:{closed_port()}"
    assert main(["--target", target, "--no-retry", "info"]) == 1
    line = _one_error_line(capsys)
    assert "UNAVAILABLE" in line and target in line


def test_tls_and_token_options_reach_the_server(capsys, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    pki = make_test_pki(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    service = FakeSentimentService()
    with serve(service, mtls_server_credentials(pki)) as target:
        argv = ["--target", target, "--tls-ca", str(pki["ca"]), "--tls-cert", str(pki["client"])]
        argv += ["--tls-key", str(pki["client_key"]), "--token-file", str(token_file)]
        assert main([*argv, "predict", "good"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "POSITIVE"
    assert service.metadata[0]["authorization"] == "Bearer s3cret"


def test_empty_token_file_is_a_usage_error(capsys, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    assert main(["--token-file", str(token_file), "info"]) == 2
    assert "is empty" in _one_error_line(capsys)


def test_help_exits_0(capsys):
    assert main(["stream", "--help"]) == 0
    assert "FILE|-" in capsys.readouterr().out


# --- environment twins of the connection flags ---------------------------------------------------


def test_every_connection_flag_has_an_environment_twin_the_server_does_not_read():
    from server.config import SETTINGS

    connection = next(g for g in build_parser({})._action_groups if g.title.startswith("connect"))
    assert {action.dest for action in connection._group_actions} == set(ENVIRONMENT)
    assert not set(ENVIRONMENT.values()) & {setting.env for setting in SETTINGS}


def test_environment_sets_connection_defaults_and_a_flag_beats_it():
    environ = {"SENTIMENT_TIMEOUT_S": "2.5", "SENTIMENT_RETRY": "off", "SENTIMENT_TLS_CA": "ca.pem"}
    from_env = build_parser(environ).parse_args(["info"])
    assert (from_env.timeout, from_env.retry, from_env.tls_ca) == (2.5, False, "ca.pem")
    flags = ["--timeout", "7", "info", "--retry", "--tls-ca", "other.pem"]
    from_flags = build_parser(environ).parse_args(flags)
    assert (from_flags.timeout, from_flags.retry, from_flags.tls_ca) == (7.0, True, "other.pem")
    unset = build_parser({}).parse_args(["info"])
    assert (unset.timeout, unset.retry, unset.tls_ca) == (10.0, True, None)


def test_target_from_the_environment_and_the_flag_beating_it(grpc_server, capsys):
    assert main(["info"], environ={"SENTIMENT_TARGET": grpc_server}) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "imdb-lstm"
    unreachable = {"SENTIMENT_TARGET": f"127.0.0.1:{closed_port()}", "SENTIMENT_RETRY": "off"}
    assert main(["info", "--target", grpc_server], environ=unreachable) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "imdb-lstm"
    assert main(["info"], environ=unreachable) == 1
    assert unreachable["SENTIMENT_TARGET"] in _one_error_line(capsys)


@pytest.mark.parametrize(
    "variable, value, complaint",
    [
        ("SENTIMENT_TIMEOUT_S", "soon", "SENTIMENT_TIMEOUT_S='soon': expected a positive float"),
        ("SENTIMENT_RETRY", "maybe", "SENTIMENT_RETRY='maybe': expected on/off"),
        ("SENTIMENT_TARGET", " ", "SENTIMENT_TARGET=' ': must not be empty"),
    ],
)
def test_a_bad_environment_variable_is_a_usage_error_naming_it(capsys, variable, value, complaint):
    assert main(["info"], environ={variable: value}) == 2
    assert complaint in _one_error_line(capsys)


def test_help_names_the_environment_variables(capsys):
    assert main(["predict", "--help"], environ={}) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for variable in ENVIRONMENT.values():
        assert f"[env {variable}]" in help_text


# --- main(argv) against the real server -----------------------------------------------------------


def _json_lines(capsys) -> list[dict]:
    captured = capsys.readouterr()
    assert captured.err == ""
    return [json.loads(line) for line in captured.out.splitlines()]


def _check_prediction(record: dict) -> None:
    assert record["label"] in ("POSITIVE", "NEGATIVE")
    assert 0.0 <= record["score"] <= 1.0
    assert (record["label"] == "POSITIVE") == (record["score"] >= 0.5)


def test_predict_texts(grpc_server, capsys):
    assert main(["--target", grpc_server, "predict", POSITIVE_REVIEW, NEGATIVE_REVIEW]) == 0
    records = _json_lines(capsys)
    assert len(records) == 2
    for record in records:
        assert "id" not in record
        _check_prediction(record)


def test_predict_file_in_several_calls_matches_predict_texts(grpc_server, capsys, tmp_path):
    reviews = [POSITIVE_REVIEW, NEGATIVE_REVIEW, "the plot was fun", "dull and bad"] * 3
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(reviews) + "\n")
    argv = ["--target", grpc_server, "predict", "--file", str(path), "--batch-size", "5"]
    assert main(argv) == 0
    from_file = _json_lines(capsys)
    assert main(["--target", grpc_server, "predict", *reviews[:4]]) == 0
    from_texts = _json_lines(capsys)
    assert len(from_file) == len(reviews)
    for record, expected in zip(from_file, from_texts * 3, strict=True):
        assert record["label"] == expected["label"]
        assert record["score"] == pytest.approx(expected["score"], abs=1e-4)


def test_predict_jsonl_echoes_ids(grpc_server, capsys, tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text(
        json.dumps({"id": "pos", "text": POSITIVE_REVIEW})
        + "\n"
        + json.dumps({"id": 2, "text": NEGATIVE_REVIEW})
        + "\n"
    )
    assert main(["--target", grpc_server, "predict", "--jsonl", "--file", str(path)]) == 0
    records = _json_lines(capsys)
    assert [r["id"] for r in records] == ["pos", "2"]
    for record in records:
        _check_prediction(record)


def test_stream_returns_one_result_per_line_in_input_order(grpc_server, capsys, tmp_path):
    # Two kinds of review alternate, so a reordered output would show in the scores.
    reviews = [POSITIVE_REVIEW if i % 2 else f"{NEGATIVE_REVIEW} {i}" for i in range(300)]
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(reviews) + "\n")
    assert main(["--target", grpc_server, "--timeout", "30", "stream", str(path)]) == 0
    streamed = _json_lines(capsys)
    assert main(["--target", grpc_server, "predict", "--file", str(path)]) == 0
    predicted = _json_lines(capsys)
    assert len(streamed) == 300
    for record, expected in zip(streamed, predicted, strict=True):
        _check_prediction(record)
        assert record["score"] == pytest.approx(expected["score"], abs=1e-4)


def test_stream_of_25000_reviews_returns_25000_results_in_input_order(grpc_server, tmp_path):
    # The acceptance run, at the test set's size: every result must line up with its
    # review, which the scores of a Predict call for the same reviews would show.
    words = "great awful loved boring fun dull the film plot was and it".split()
    rng = random.Random(0)
    reviews = [" ".join(rng.choices(words, k=rng.randint(3, 30))) for _ in range(25_000)]
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(reviews) + "\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--target", grpc_server, "stream", str(path)]) == 0
    streamed = [json.loads(line)["score"] for line in out.getvalue().splitlines()]
    with SentimentClient(grpc_server) as client:
        expected = [
            p.score for i in range(0, 25_000, 250) for p in client.predict(reviews[i : i + 250])
        ]
    assert len(streamed) == 25_000
    assert len(set(expected)) > 100  # enough distinct scores for a shuffle to show
    assert streamed == pytest.approx(expected, abs=1e-4)


def test_stream_reports_a_bad_review_in_place_and_exits_1(grpc_server, capsys, monkeypatch):
    reviews = [{"id": "a", "text": POSITIVE_REVIEW}, {"id": "b", "text": ""}]
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in reviews))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["--target", grpc_server, "stream", "--jsonl", "-"]) == 1
    captured = capsys.readouterr()
    first, second = (json.loads(line) for line in captured.out.splitlines())
    assert first["id"] == "a" and first["label"] in ("POSITIVE", "NEGATIVE")
    assert second["id"] == "b" and second["error"]["code"] == "INVALID_ARGUMENT"
    assert captured.err.count("\n") == 1
    assert "1 of 2 reviews failed; first, id b: INVALID_ARGUMENT" in captured.err


def test_predict_bad_review_exits_1_with_the_server_message(grpc_server, capsys):
    assert main(["--target", grpc_server, "predict", POSITIVE_REVIEW, ""]) == 1
    line = _one_error_line(capsys)
    assert "INVALID_ARGUMENT" in line


def test_info(grpc_server, capsys):
    assert main(["--target", grpc_server, "info"]) == 0
    (info,) = _json_lines(capsys)
    assert info["version"] == 1
    assert info["maxlen"] > 0 and info["vocabulary_size"] > 0
    assert main(["info", "--target", grpc_server, "--format", "table"]) == 0
    assert "decision_threshold" in capsys.readouterr().out


def test_installed_command_runs(grpc_server):
    command = Path(sys.executable).parent / "sentiment-client"
    completed = subprocess.run(
        [str(command), "--target", grpc_server, "predict", POSITIVE_REVIEW],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    (record,) = [json.loads(line) for line in completed.stdout.splitlines()]
    _check_prediction(record)
