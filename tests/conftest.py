"""Shared fixtures: a tiny real model directory built in seconds, and a real in-process server."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# `sentiment-server` serves from one front process per core by default (--workers 0); the
# tests that start it as a command test one process unless they ask for more
# (tests/test_workers.py), as they did before --workers.
os.environ.setdefault("SENTIMENT_WORKERS", "1")

# Made-up reviews: a few sentiment words hidden among filler, so one epoch learns something.
_POSITIVE_WORDS = "great wonderful superb loved brilliant moving fun".split()
_NEGATIVE_WORDS = "awful boring terrible hated dull waste bad".split()
_FILLER_WORDS = "the movie film plot actor scene story was and it a of".split()
TRAINING_REVIEW_COUNT = 200


def _made_up_reviews(count: int) -> tuple[list[str], list[int]]:
    import numpy as np

    rng = np.random.default_rng(0)
    texts, labels = [], []
    for i in range(count):
        label = i % 2
        sentiment = _POSITIVE_WORDS if label else _NEGATIVE_WORDS
        words = list(rng.choice(_FILLER_WORDS, rng.integers(2, 12)))
        words += list(rng.choice(sentiment, rng.integers(1, 4)))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def build_tiny_model_version(
    version_dir: Path, version: int = 1, seed: int = 0, **preset_overrides
) -> Path:
    """Trains the "tiny" preset for one epoch and writes `model.keras` then `metadata.json`.

    Another `seed` gives other initial weights, so a differently scoring model.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from training.model import build_model, build_vectorizer, get_preset

    keras.utils.set_random_seed(seed)
    preset = get_preset("tiny", **preset_overrides)
    texts, labels = _made_up_reviews(TRAINING_REVIEW_COUNT)
    vectorizer = build_vectorizer(preset)
    vectorizer.adapt(tf.constant(texts))
    model = build_model(preset, vectorizer)
    history = model.fit(
        tf.constant(texts), np.array(labels, dtype="float32"), epochs=1, batch_size=32, verbose=0
    )
    version_dir.mkdir(parents=True, exist_ok=True)
    model.save(version_dir / "model.keras")
    metadata = {
        "name": "imdb-lstm",
        "version": version,
        "preset": preset.name,
        "hyperparameters": preset.to_dict(),
        "vocabulary_size": int(vectorizer.vocabulary_size()),
        "maxlen": preset.maxlen,
        "decision_threshold": 0.5,
        "data": {"sha256": "0" * 64, "source": "made-up test reviews"},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "training": {"epochs": 1, "loss": float(history.history["loss"][-1])},
        "metrics": {
            "validation": {"accuracy": 0.5, "loss": 0.69, "auc": 0.5},
            "test": {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "roc_auc": 0.5},
        },
        "created_at": "2025-01-01T00:00:00+00:00",
    }
    # metadata.json last: its presence is what marks the version complete.
    (version_dir / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return version_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory (`<dir>/1/{model.keras,metadata.json}`) holding a tiny trained model."""
    model_dir = tmp_path_factory.mktemp("models") / "imdb-lstm"
    build_tiny_model_version(model_dir / "1", version=1)
    return model_dir


@pytest.fixture(scope="session")
def serving_model(tiny_model_dir: Path):
    """The tiny model loaded for serving on the CPU and warmed up."""
    from server.scoring.model import ServingModel

    model = ServingModel.load_latest(tiny_model_dir, device="cpu")
    model.warm_up()
    return model


class RunningServer:
    """A real server on port 0, run by its own event loop in a background thread."""

    def __init__(self, config, model):
        self._config = config
        self._model = model
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.port = 0
        self.server = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def call(self, coroutine, timeout_s: float = 30):
        """Runs a coroutine on the server's loop (e.g. `server.stop()`) and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    async def _main(self) -> None:
        from server.main import create_server

        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            self.server, self.port = await create_server(self._config, self._model)
            await self.server.start()
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._ready.set()
        await self._stop_requested.wait()
        await self.server.stop(grace_s=1)

    def __enter__(self) -> RunningServer:
        self._thread.start()
        assert self._ready.wait(60), "the test server did not start within 60 s"
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, *exc_info) -> None:
        self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join(30)


def server_config_for_tests(model_dir: Path, **settings):
    """Settings for a test server: loopback, port 0, a short batching delay."""
    from server.config import ServerConfig, validate

    defaults = {"host": "127.0.0.1", "port": 0, "model_dir": model_dir, "device": "cpu"}
    defaults.update(max_delay_ms=20, stats_interval_s=0)
    return validate(ServerConfig(**{**defaults, **settings}))


@pytest.fixture(scope="session")
def start_server(serving_model, tiny_model_dir):
    """Factory: `with start_server(max_batch_size=4) as running:` -> RunningServer (.target).

    `model=` swaps in another object with ServingModel's attributes (e.g. a slow fake).
    """

    def start(model=None, **settings) -> RunningServer:
        config = server_config_for_tests(tiny_model_dir, **settings)
        return RunningServer(config, serving_model if model is None else model)

    return start


@pytest.fixture(scope="session")
def grpc_server(start_server) -> Iterator[str]:
    """A "127.0.0.1:PORT" target of a real in-process server serving the tiny model."""
    with start_server() as running:
        yield running.target


@pytest.fixture(scope="session")
def container_image() -> str:
    """The working tree's container image, built as `make image` builds it (tests/podman.py);
    skipped where podman is missing, unless SENTIMENT_IMAGE_TESTS=required."""
    from tests.podman import build_image, require_podman

    require_podman()
    return build_image()
