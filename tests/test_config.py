"""Server settings: flags over environment over defaults, and bad values named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import DEFAULT_MODEL_DIR, SETTINGS, ServerConfig, build_parser, load_config
from server.errors import ConfigError


def test_defaults_need_no_flags_or_environment(tmp_path):
    # Only the model directory is given: the shipped one may not be trained yet.
    config = load_config(["--model-dir", str(tmp_path)], environ={})
    assert config == ServerConfig(model_dir=tmp_path)
    assert (config.port, config.host, config.device, config.reflection) == (
        50051,
        "[::]",
        "auto",
        True,
    )
    assert ServerConfig().model_dir == Path(__file__).resolve().parents[1] / "models" / "imdb-lstm"


def test_default_model_dir_is_found_from_the_package_not_the_working_directory(
    monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_MODEL_DIR.is_absolute()
    assert (DEFAULT_MODEL_DIR.parents[1] / "server" / "config.py").is_file()


def test_flag_wins_over_environment_which_wins_over_default(tmp_path):
    environ = {"SENTIMENT_PORT": "6000", "SENTIMENT_MAX_BATCH_SIZE": "8", "SENTIMENT_DEVICE": "CPU"}
    config = load_config(["--port", "7000", "--model-dir", str(tmp_path)], environ=environ)
    assert (config.port, config.max_batch_size, config.device) == (7000, 8, "cpu")
    assert config.model_dir == tmp_path
    assert config.max_delay_ms == ServerConfig().max_delay_ms


def test_deadline_admission_is_on_unless_turned_off_by_flag_or_environment():
    assert load_config([], environ={}).deadline_admission is True
    assert load_config(["--no-deadline-admission"], environ={}).deadline_admission is False
    off = {"SENTIMENT_DEADLINE_ADMISSION": "off"}
    assert load_config([], environ=off).deadline_admission is False


def test_reflection_can_be_turned_off_by_flag_or_environment():
    assert load_config(["--no-reflection"], environ={}).reflection is False
    assert load_config([], environ={"SENTIMENT_REFLECTION": "off"}).reflection is False
    assert load_config(["--reflection"], environ={"SENTIMENT_REFLECTION": "0"}).reflection is True


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--port", "70000"], {}, "--port='70000' must be between 0 and 65535"),
        ([], {"SENTIMENT_PORT": "http"}, "SENTIMENT_PORT='http' is not an integer"),
        (["--max-batch-size", "0"], {}, "--max-batch-size='0' must be between 1"),
        (["--max-delay-ms", "soon"], {}, "--max-delay-ms='soon' is not a number"),
        (["--max-delay-ms", "inf"], {}, "--max-delay-ms='inf' is not a finite number"),
        (["--device", "tpu"], {}, "--device='tpu' must be one of auto, cpu, cpu-keras, gpu"),
        ([], {"SENTIMENT_QUEUE_CAPACITY": "-5"}, "SENTIMENT_QUEUE_CAPACITY='-5' must be between"),
        (["--model-dir", "/no/such/models"], {}, "--model-dir='/no/such/models' does not exist"),
        ([], {"SENTIMENT_REFLECTION": "maybe"}, "SENTIMENT_REFLECTION='maybe' is not a boolean"),
        (["--grace-s", "-1"], {}, "--grace-s='-1' must be between 0"),
        (["--event-loop", "trio"], {}, "--event-loop='trio' must be one of auto, uvloop, asyncio"),
        (
            ["--max-reviews-per-request", "2000"],
            {},
            "--max-reviews-per-request 2000 exceeds --queue-capacity 1024",
        ),
        (
            ["--max-batch-size", "64", "--queue-capacity", "32", "--max-reviews-per-request", "8"],
            {},
            "--max-batch-size 64 exceeds --queue-capacity 32",
        ),
    ],
)
def test_bad_values_are_named_with_their_source(argv, environ, message):
    with pytest.raises(ConfigError) as raised:
        load_config(argv, environ=environ)
    assert message in str(raised.value)


def test_help_lists_every_flag_with_its_environment_variable():
    help_text = " ".join(build_parser().format_help().split())
    for setting in SETTINGS:
        assert setting.flag in help_text
        assert f"env {setting.env}" in help_text


def test_receive_limit_fits_the_largest_allowed_request():
    config = ServerConfig(max_reviews_per_request=10, max_review_bytes=1000)
    assert config.max_receive_message_bytes >= 10 * 1000
    assert config.max_receive_message_bytes < 4 * 1024 * 1024  # tighter than gRPC's default


def test_uvloop_asked_for_where_it_is_not_installed_is_refused(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="--event-loop='uvloop' is not installed here"):
        load_config(["--event-loop", "uvloop"], environ={})
    assert load_config([], environ={}).event_loop == "auto"  # auto falls back instead


@pytest.mark.parametrize(
    ("choice", "workers", "loop_module"),
    [
        ("auto", 0, "uvloop"),  # across processes (one front per core)
        ("auto", 2, "uvloop"),
        ("auto", 1, "asyncio"),  # one process: measured no better on uvloop
        ("uvloop", 1, "uvloop"),
        ("asyncio", 2, "asyncio"),
    ],
)
def test_each_event_loop_choice_runs_coroutines_on_that_loop(choice, workers, loop_module):
    import asyncio

    from server.main import event_loop_runner

    async def running_loop():
        return type(asyncio.get_running_loop()).__module__

    run, name = event_loop_runner(choice, workers)
    assert run(running_loop()).split(".")[0] == loop_module
    assert name.startswith(loop_module)


def test_auto_runs_asyncios_loop_where_uvloop_does_not_import(monkeypatch):
    import asyncio
    import sys

    from server.main import event_loop_runner

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_runner("auto", workers=2) == (asyncio.run, "asyncio")
