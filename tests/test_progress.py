"""Progress on stderr for long runs: shown on a terminal, silent when piped. The Progress line
itself, `sentiment-client stream` / `predict --file` (through main and as the installed command
on a real pty), and `sentiment-eval`'s scoring and baseline fit."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from imdb_sentiment_client.cli import main
from imdb_sentiment_client.progress import Progress, format_duration
from tests.imdb_fixture import make_archive
from training import data as imdb
from training import evaluate

REVIEWS = ["a great wonderful superb film, loved it", "an awful boring terrible waste, hated it"]


class TerminalBuffer(io.StringIO):
    """Collects what is written, and says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


# --- the Progress line -----------------------------------------------------------------------


def test_progress_line_shows_done_share_rate_and_time_left():
    clock, out = FakeClock(), TerminalBuffer()
    with Progress("reviews", total=1000, stream=out, clock=clock) as progress:
        clock.now_s += 2.0
        progress.advance(250)
        assert out.getvalue().endswith("\rreviews: 250/1,000 (25%), 125/s, 0:06 left")
        clock.now_s += 6.0
        progress.advance(750)
    assert out.getvalue().endswith("\rreviews: 1,000/1,000 (100%) in 0:08, 125/s\n")


def test_progress_redraws_at_most_every_interval_and_pads_over_a_longer_line():
    clock, out = FakeClock(), TerminalBuffer()
    progress = Progress("reviews", stream=out, clock=clock, min_interval_s=0.2)
    clock.now_s += 1.0
    progress.advance(1000)
    for _ in range(50):  # within the same 0.2 s: no redraw
        progress.advance(1)
    assert out.getvalue().count("\r") == 1
    clock.now_s += 0.3
    progress.advance(1)
    first, second = out.getvalue().split("\r")[1:]
    assert second.startswith("reviews: 1,051, 808/s") and len(second) >= len(first)


def test_progress_says_when_a_run_stopped_and_when_a_phase_is_done():
    clock, out = FakeClock(), TerminalBuffer()
    with pytest.raises(KeyboardInterrupt), Progress("reviews", 10, stream=out, clock=clock) as p:
        p.advance(3)
        clock.now_s += 65
        raise KeyboardInterrupt
    assert out.getvalue() == (
        "\rreviews ...\rreviews: 3/10 (30%)\rreviews: 3/10 (30%), stopped after 1:05\n"
    )
    out = TerminalBuffer()
    with Progress("fitting the baseline", stream=out, clock=clock):
        clock.now_s += 3725
    assert out.getvalue() == "\rfitting the baseline ...\rfitting the baseline: done in 1:02:05\n"


def test_progress_writes_nothing_when_the_stream_is_not_a_terminal():
    out = io.StringIO()
    with Progress("reviews", total=3, stream=out) as progress:
        progress.advance(3)
    assert out.getvalue() == ""


def test_format_duration():
    assert [format_duration(s) for s in (0, 7.4, 754, 3723)] == ["0:00", "0:07", "12:34", "1:02:03"]


# --- sentiment-client --------------------------------------------------------------------------


@pytest.fixture
def reviews_file(tmp_path) -> Path:
    path = tmp_path / "reviews.txt"
    path.write_text("\n".join(REVIEWS * 150) + "\n")  # 300 reviews
    return path


@pytest.mark.parametrize("command", [["stream"], ["predict", "--batch-size", "16", "--file"]])
def test_cli_shows_progress_on_a_terminal_stderr(
    grpc_server, reviews_file, monkeypatch, capsys, command
):
    stderr = TerminalBuffer()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert main(["--target", grpc_server, *command, str(reviews_file)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 300
    assert stderr.getvalue().startswith("\rreviews ...\r")
    last = stderr.getvalue().split("\r")[-1]
    assert (
        last.startswith("reviews: 300/300 (100%) in 0:")
        and last.endswith("\n")
        and last.rstrip().endswith("/s")
    )


def test_cli_is_silent_on_a_piped_stderr_and_when_results_go_to_the_terminal(
    grpc_server, reviews_file, monkeypatch, capsys
):
    assert main(["--target", grpc_server, "stream", str(reviews_file)]) == 0
    assert capsys.readouterr().err == ""  # capsys's stderr is no terminal
    stderr, stdout = TerminalBuffer(), TerminalBuffer()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["--target", grpc_server, "stream", str(reviews_file)]) == 0
    assert len(stdout.getvalue().splitlines()) == 300 and stderr.getvalue() == ""


def _read_until_closed(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other end closed
            return
        if not chunk:
            return
        into.append(chunk)


def test_installed_command_with_stderr_on_a_pty_shows_progress_and_piped_does_not(
    grpc_server, reviews_file
):
    command = [str(Path(sys.executable).parent / "sentiment-client"), "--target", grpc_server]
    command += ["stream", str(reviews_file)]
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    terminal: list[bytes] = []
    reader = threading.Thread(target=_read_until_closed, args=(leader, terminal))
    reader.start()
    stdout, _ = process.communicate(timeout=120)
    reader.join(10)
    os.close(leader)
    assert process.returncode == 0
    assert len(stdout.splitlines()) == 300
    assert b"reviews: 300/300 (100%) in " in b"".join(terminal)

    piped = subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert piped.returncode == 0 and piped.stderr == b""
    assert [json.loads(line)["label"] for line in piped.stdout.splitlines()[:2]] == [
        "POSITIVE",
        "NEGATIVE",
    ]


# --- sentiment-eval ----------------------------------------------------------------------------


class ConstantModel:
    """Stands in for the Keras model: the same score for every review."""

    def __call__(self, inputs, training: bool = False) -> np.ndarray:
        return np.full((int(inputs.shape[0]), 1), 0.7, dtype=np.float32)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> imdb.Dataset:
    return imdb.load(make_archive(tmp_path_factory.mktemp("imdb"), per_class=20))


def test_evaluation_reports_scoring_and_the_baseline_fit_on_a_terminal(small_dataset, monkeypatch):
    stderr = TerminalBuffer()
    monkeypatch.setattr(sys, "stderr", stderr)
    evaluate.evaluate_model(ConstantModel(), small_dataset)
    lines = stderr.getvalue().split("\n")
    assert lines[0].split("\r")[-1].startswith("scoring test reviews: 40/40 (100%) in 0:")
    assert lines[1].split("\r")[-1].startswith("fitting the TF-IDF baseline: done in 0:")


def test_evaluation_is_silent_when_stderr_is_piped(small_dataset, capsys):
    evaluate.evaluate_model(ConstantModel(), small_dataset)
    assert capsys.readouterr().err == ""
