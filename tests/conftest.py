"""Shared fixtures: a tiny real model directory built in seconds, and a real in-process server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def build_tiny_model_version(version_dir: Path, version: int = 1) -> Path:
    """Trains the "tiny" preset for one epoch and writes `model.keras` then `metadata.json`."""
    import keras
    import numpy as np
    import tensorflow as tf

    from training.model import build_model, build_vectorizer, get_preset

    keras.utils.set_random_seed(0)
    preset = get_preset("tiny")
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
    from server.model import ServingModel

    model = ServingModel.load_latest(tiny_model_dir, device="cpu")
    model.warm_up()
    return model
