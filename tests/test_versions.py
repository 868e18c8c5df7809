"""Model versions: the highest that loads serves; newer ones swap in under load; bad ones skip."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.errors import InvalidReviewError, ModelLoadError
from server.scoring.versions import ModelManager, ModelVersion, VersionedScore, complete_versions
from tests.conftest import RunningServer, build_tiny_model_version, server_config_for_tests

REVIEWS = ["a wonderful and moving film", "boring, a dull waste of time"]


class FakeVersion:
    """A loaded version's attributes; predict scores every review `score`, or waits if held."""

    name, maxlen, vocabulary_size, metrics, preset = "fake", 40, 100, {}, "fake"

    def __init__(self, version: int, score: float = 0.5, threshold: float = 0.5):
        self.version = version
        self.score = score
        self.decision_threshold = threshold
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def predict(self, reviews):
        self.started.set()
        self.release.wait(30)
        return [InvalidReviewError("is bad") if r == "bad" else self.score for r in reviews]


def make_version_dirs(model_dir: Path, *versions: int) -> None:
    for version in versions:
        (model_dir / str(version)).mkdir(parents=True)
        (model_dir / str(version) / "metadata.json").write_text(json.dumps({"version": version}))


class Loader:
    """Loads FakeVersions; the versions in `broken` fail like a corrupt model file."""

    def __init__(self, broken: set[int] = frozenset()):
        self.broken = set(broken)
        self.attempts: list[int] = []

    def __call__(self, version: ModelVersion) -> FakeVersion:
        self.attempts.append(version.version)
        if version.version in self.broken:
            raise ModelLoadError(f"cannot load {version.path / 'model.keras'}: not a zip file")
        return FakeVersion(version.version, score=version.version / 10)


def test_complete_versions_are_integer_folders_with_metadata_highest_first(tmp_path):
    make_version_dirs(tmp_path, 2, 10, 9)
    (tmp_path / "11").mkdir()  # no metadata.json yet: still being copied
    (tmp_path / "latest").mkdir()
    assert [v.version for v in complete_versions(tmp_path)] == [10, 9, 2]


def test_scores_name_the_version_and_threshold_that_made_them():
    manager = ModelManager(FakeVersion(3, score=0.6, threshold=0.7))
    score, error = manager.predict(["good", "bad"])
    assert isinstance(score, VersionedScore)
    assert (float(score), score.model_version, score.is_positive) == (0.6, 3, False)
    assert isinstance(error, InvalidReviewError)
    assert (manager.version, manager.name) == (3, "fake")  # describes the serving version


def test_a_batch_that_started_on_one_version_finishes_on_it(tmp_path):
    make_version_dirs(tmp_path, 1, 2)
    first = FakeVersion(1, score=0.1)
    first.release.clear()
    manager = ModelManager(first, model_dir=tmp_path, load=Loader())
    results: list = []
    batch = threading.Thread(target=lambda: results.extend(manager.predict(["x", "y"])))
    batch.start()
    assert first.started.wait(10)
    assert asyncio.run(manager.poll_once()) is True  # swapped while the batch runs
    assert manager.current.version == 2
    first.release.set()
    batch.join(10)
    assert [(s, s.model_version) for s in results] == [(0.1, 1), (0.1, 1)]
    assert [s.model_version for s in manager.predict(["z"])] == [2]


def test_a_version_that_fails_is_logged_skipped_and_retried_only_once_it_changes(tmp_path, caplog):
    make_version_dirs(tmp_path, 1, 2, 3)
    loader = Loader(broken={3})
    manager = ModelManager(FakeVersion(1), model_dir=tmp_path, load=loader)
    with caplog.at_level(logging.ERROR, logger="server.versions"):
        assert asyncio.run(manager.poll_once()) is True
        assert manager.current.version == 2  # the highest version that loads
        assert asyncio.run(manager.poll_once()) is False
        assert asyncio.run(manager.poll_once()) is False
    assert loader.attempts == [3, 2]  # 3 is not tried on every poll
    assert caplog.text.count("model version 3 failed to load; still serving version 1") == 1
    assert "not a zip file" in caplog.text
    assert (manager.versions_loaded, manager.versions_failed) == (2, 1)

    (tmp_path / "3" / "model.keras").write_bytes(b"a fixed copy")  # its files changed
    loader.broken.clear()
    assert asyncio.run(manager.poll_once()) is True
    assert manager.current.version == 3
    assert loader.attempts == [3, 2, 3]


def test_start_up_serves_the_highest_version_that_loads(tmp_path, caplog):
    make_version_dirs(tmp_path, 1, 2)
    loader = Loader(broken={2})
    with caplog.at_level(logging.ERROR, logger="server.versions"):
        manager = ModelManager.from_directory(tmp_path, loader)
    assert manager.current.version == 1
    assert "model version 2 failed to load; trying older ones" in caplog.text
    assert asyncio.run(manager.poll_once()) is False  # nor is 2 retried by the poller
    assert loader.attempts == [2, 1]


def test_start_up_with_no_version_that_loads_names_each_failure(tmp_path):
    make_version_dirs(tmp_path, 1, 2)
    with pytest.raises(ModelLoadError) as raised:
        ModelManager.from_directory(tmp_path, Loader(broken={1, 2}))
    assert f"no model version in {tmp_path} loads" in str(raised.value)
    assert "version 2: cannot load" in str(raised.value)
    assert "version 1: cannot load" in str(raised.value)


# -- a real rollout ----------------------------------------------------------------


def copy_in(source: Path, model_dir: Path, version: int) -> None:
    """How an operator rolls out a version: copy beside the others, then rename into place."""
    staging = model_dir / f".{version}.partial"  # not an integer name: never loaded
    shutil.copytree(source, staging)
    os.rename(staging, model_dir / str(version))  # atomic: the poller sees all or nothing


class Load:
    """Threads sending Predict calls back to back, recording each answer's versions."""

    def __init__(self, target: str, threads: int = 4):
        self._channel = grpc.insecure_channel(target)
        self._stub = sentiment_pb2_grpc.SentimentServiceStub(self._channel)
        self.stop = threading.Event()
        # Per thread, per prediction in order: (model version, review index, score).
        self.answers: list[list[tuple[int, int, float]]] = [[] for _ in range(threads)]
        self.errors: list[grpc.RpcError] = []
        self._threads = [
            threading.Thread(target=self._run, args=(answers,)) for answers in self.answers
        ]

    def _run(self, answers: list) -> None:
        request = sentiment_pb2.PredictRequest(reviews=REVIEWS)
        while not self.stop.is_set():
            try:
                response = self._stub.Predict(request, timeout=30)
            except grpc.RpcError as error:
                self.errors.append(error)
                continue
            answers.extend(
                (p.model_version, i, p.score) for i, p in enumerate(response.predictions)
            )

    def each_answers_more(self, count: int) -> Callable[[], bool]:
        """A condition: every thread has `count` more answers than now."""
        seen = [len(answers) for answers in self.answers]
        return lambda: all(len(a) >= n + count for a, n in zip(self.answers, seen, strict=True))

    def wait_until(self, condition, timeout_s: float = 90) -> None:
        finished = threading.Event()
        while not condition():
            assert not finished.wait(0.05) and timeout_s > 0, "timed out waiting under load"
            timeout_s -= 0.05

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)
        self._channel.close()


def test_a_new_version_copied_in_under_load_takes_over_without_a_failed_request(
    tiny_model_dir, tmp_path
):
    from server.scoring.model import ServingModel

    model_dir = tmp_path / "imdb-lstm"
    shutil.copytree(tiny_model_dir / "1", model_dir / "1")
    new_version = build_tiny_model_version(tmp_path / "built" / "2", version=2, seed=7)
    expected = ServingModel.load_version(ModelVersion(2, new_version), "cpu").predict(REVIEWS)
    config = server_config_for_tests(model_dir, poll_s=0.2, max_batch_size=8)

    with RunningServer(config, None) as running, Load(running.target) as load:
        load.wait_until(load.each_answers_more(10))
        copy_in(new_version, model_dir, 2)
        load.wait_until(lambda: all(answers[-1][0] == 2 for answers in load.answers))
        load.wait_until(load.each_answers_more(10))

        # A version that cannot load is skipped; version 2 goes on serving.
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "model.keras").write_bytes(b"not a keras file")
        metadata = json.loads((new_version / "metadata.json").read_text())
        (tmp_path / "broken" / "metadata.json").write_text(json.dumps({**metadata, "version": 3}))
        copy_in(tmp_path / "broken", model_dir, 3)
        load.wait_until(lambda: running.server.model.versions_failed == 1)
        load.wait_until(load.each_answers_more(10))
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            info = stub.GetModelInfo(sentiment_pb2.GetModelInfoRequest(), timeout=10)

    assert load.errors == []
    assert info.version == 2
    for answers in load.answers:
        versions = [version for version, _, _ in answers]
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions), "an answer went back to version 1"
        for version, index, score in answers:
            if version == 2:
                assert score == pytest.approx(expected[index], abs=1e-5)
            else:  # trained differently: version 1 gave other answers
                assert score != pytest.approx(expected[index], abs=1e-3)
