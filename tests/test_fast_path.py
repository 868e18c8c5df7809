"""The CPU fast path gives the Keras classifier's scores: every preset with random weights, the
shipped model on real IMDB test reviews, and the plain path kept where the fast one does not fit.
Scores only, never timings."""

from __future__ import annotations

import random
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from server.scoring.fast_path import (
    BATCH_BUCKETS,
    MAX_PADDED_ROWS_SHARE,
    SMALL_PADDING_ROWS,
    FastScorer,
    UnsupportedGraph,
    chunk_sizes,
    reverse_within_length,
    stage_rows,
)
from server.scoring.model import ServingModel
from server.scoring.versions import complete_versions
from training.model import PRESETS, build_classifier, get_preset

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL_DIR = REPO_ROOT / "models" / "imdb-lstm"
IMDB_ARCHIVE = REPO_ROOT.parent / "shared" / "data" / "aclImdb.tar.gz"
# Float32 sums in another order: the fast path agrees with Keras to about 1e-7.
TOLERANCE = 1e-5


def random_ids(rng: np.random.Generator, lengths: list[int], vocab_size: int) -> np.ndarray:
    """Right-padded ids [len(lengths), max(lengths)] of random real tokens (ids >= 1)."""
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, vocab_size, length)
    return ids


def randomised(preset_name: str, seed: int = 0, std: float = 0.5, **overrides) -> keras.Model:
    """The preset's classifier with every weight drawn at random, large enough that scores
    spread (the bag starts at zero and biases too, so they are drawn as well)."""
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(get_preset(preset_name, **overrides))
    rng = np.random.default_rng(seed)
    for weight in classifier.weights:
        weight.assign(rng.normal(0.0, std, weight.shape).astype("float32"))
    return classifier


# Every preset, and the seed's last-state LSTM read in both directions.
@pytest.mark.parametrize(
    ("preset_name", "overrides"),
    [(name, {}) for name in PRESETS] + [("seed", {"bidirectional": True})],
)
def test_every_preset_scores_as_keras_does(preset_name, overrides):
    preset = get_preset(preset_name, **overrides)
    classifier = randomised(preset_name, **overrides)
    # Small buckets keep the compiles few; 11 rows still take several chunks, one padded,
    # on two lanes.
    scorer = FastScorer(classifier, preset.maxlen, buckets=(1, 4), lanes=2)
    rng = np.random.default_rng(1)
    lengths = [preset.maxlen, 1, 2, *rng.integers(1, preset.maxlen + 1, 8).tolist()]
    ids = random_ids(rng, lengths, preset.vocab_size)
    expected = classifier(ids, training=False).numpy()[:, 0]
    fast = scorer(ids)
    assert np.abs(fast - expected).max() <= TOLERANCE
    assert expected.max() - expected.min() > 0.05  # scores differ, so the check means something
    # One chunk of 16 runs in stages of 16, 8 and 4 rows, 5 of them padding; the program
    # sorts its rows itself, so real and padding rows go in shuffled together.
    staged = FastScorer(classifier, preset.maxlen, buckets=(16,))
    assert stage_rows(16) == [16, 8, 4]
    padded = np.zeros((16, preset.maxlen), dtype=np.int32)
    slots = rng.permutation(16)[: len(ids)]
    padded[slots, : ids.shape[1]] = ids
    in_stages = staged._score(tf.constant(padded)).numpy()
    assert np.abs(in_stages[slots] - expected).max() <= TOLERANCE
    # Alone (bucket 1), each review scores as in the batch.
    for row in (0, 1, 5):
        alone = scorer(ids[row : row + 1, : lengths[row]])
        assert alone[0] == pytest.approx(fast[row], abs=TOLERANCE)


def test_a_layer_graph_it_does_not_know_is_refused_by_name():
    ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(50, 4, mask_zero=True)(ids)
    x = keras.layers.GRU(3, name="the_gru")(x)
    classifier = keras.Model(ids, keras.layers.Dense(1, activation="sigmoid")(x))
    with pytest.raises(UnsupportedGraph, match="the_gru: a GRU"):
        FastScorer(classifier, maxlen=10)


def test_an_lstm_that_keras_would_run_otherwise_is_refused():
    ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(50, 4, mask_zero=True)(ids)
    x = keras.layers.LSTM(3, activation="relu", name="relu_lstm")(x)
    classifier = keras.Model(ids, keras.layers.Dense(1)(x))
    with pytest.raises(UnsupportedGraph, match="relu_lstm: settings"):
        FastScorer(classifier, maxlen=10)


def test_the_model_keeps_the_keras_path_when_the_fast_one_does_not_fit(tiny_model_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise UnsupportedGraph("a layer it does not know")

    monkeypatch.setattr("server.scoring.model.FastScorer", refuse)
    model = ServingModel.load_latest(tiny_model_dir, device="cpu")
    assert (model.scoring_path, model.fallback_reason) == ("keras", "a layer it does not know")
    assert isinstance(model.predict(["a great film"])[0], float)


def test_which_path_runs_where(tiny_model_dir):
    assert ServingModel.load_latest(tiny_model_dir, device="cpu").scoring_path == "fast"
    assert ServingModel.load_latest(tiny_model_dir, device="cpu-keras").scoring_path == "keras"
    # On a GPU the Keras classifier runs (cuDNN); built here without running anything.
    version = complete_versions(tiny_model_dir)[0]
    keras_model = keras.saving.load_model(version.path / "model.keras", safe_mode=True)
    metadata = {"name": "imdb-lstm", "version": 1, "maxlen": 40, "vocabulary_size": 500}
    assert ServingModel(keras_model, metadata, version, "/GPU:0").scoring_path == "keras"


@pytest.mark.parametrize("lanes", [1, 2])
def test_chunks_cover_every_row_in_compiled_sizes_with_little_padding(lanes):
    for rows in range(1, 300):
        chunks = chunk_sizes(rows, BATCH_BUCKETS, lanes)
        assert sum(taken for taken, _ in chunks) == rows
        assert all(bucket in BATCH_BUCKETS and taken <= bucket for taken, bucket in chunks)
        assert all(taken == bucket for taken, bucket in chunks[:-1])  # only the last is padded
        taken, bucket = chunks[-1]
        assert bucket - taken <= max(MAX_PADDED_ROWS_SHARE * bucket, SMALL_PADDING_ROWS)
    # Two lanes: a full batch is cut in four, two chunks per core; a smaller one in two.
    assert chunk_sizes(128, BATCH_BUCKETS, 2) == [(32, 32)] * 4
    assert chunk_sizes(64, BATCH_BUCKETS, 2) == [(32, 32)] * 2
    assert chunk_sizes(128, BATCH_BUCKETS, 1) == [(64, 64)] * 2
    assert chunk_sizes(1, BATCH_BUCKETS, 2) == [(1, 1)]


def test_reverse_within_length_keeps_padding_on_the_right():
    ids = tf.constant([[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 7, 8]])
    lengths = tf.constant([3, 1, 4])
    reversed_ids = reverse_within_length(ids, lengths).numpy().tolist()
    assert reversed_ids == [[3, 2, 1, 0], [4, 0, 0, 0], [8, 7, 6, 5]]


@pytest.fixture(scope="module")
def imdb_test_reviews() -> list[str]:
    if not IMDB_ARCHIVE.is_file():
        pytest.skip(f"no IMDB archive at {IMDB_ARCHIVE}")
    from training import data

    texts = data.load(IMDB_ARCHIVE).test.texts
    return [texts[i] for i in random.Random(0).sample(range(len(texts)), 600)]


def test_the_shipped_model_scores_real_reviews_as_keras_does(imdb_test_reviews):
    model = ServingModel.load_latest(SHIPPED_MODEL_DIR, device="cpu")
    assert model.scoring_path == "fast"
    largest = 0.0
    for start in range(0, len(imdb_test_reviews), 128):
        batch = imdb_test_reviews[start : start + 128]
        ids = model.tokenize(batch)
        ids = ids[np.count_nonzero(ids, axis=1) > 0]
        largest = max(largest, float(np.abs(model.score(ids) - model.score_keras(ids)).max()))
    assert largest <= 1e-4
    served = model.predict(imdb_test_reviews[:5])
    alone = [model.score_keras(model.tokenize([review]))[0] for review in imdb_test_reviews[:5]]
    assert served == pytest.approx(alone, abs=1e-4)
