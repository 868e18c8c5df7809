"""Explain's gradients on the fast path are Keras' gradients: every preset whose ids only the LSTM
reads, with random weights, and the shipped model in the server; other graphs are refused."""

from __future__ import annotations

import numpy as np
import pytest

from server.explanations.explain import explain_review
from server.scoring.fast_gradients import FastPresenceGradients
from server.scoring.fast_path import GraphReader, UnsupportedGraph
from server.scoring.integrated_gradients import PresenceGradients
from server.scoring.model import ServingModel
from tests.test_fast_path import SHIPPED_MODEL_DIR, randomised
from training.model import build_classifier, get_preset

MAXLEN = 40
# Two small buckets keep the compiles few; 11 presences take two calls, the second padded.
BUCKETS = (4, 8)


def presences_across_the_path() -> np.ndarray:
    return np.array([0.0, 1.0, 0.5, 0.02, 0.98, 0.3, 0.7, 0.11, 0.89, 0.45, 0.55])


def assert_same_gradients(fast, keras_path, ids: np.ndarray, presences: np.ndarray) -> None:
    gradients, scores = fast(ids, presences)
    expected_gradients, expected_scores = keras_path(ids, presences)
    assert gradients.shape == expected_gradients.shape == (len(presences), len(ids))
    # Float32 sums in another order, and tanh as 2 sigmoid(2x) - 1: about 1e-6 apart, relative.
    assert np.abs(gradients - expected_gradients).max() <= 1e-4 * np.abs(expected_gradients).max()
    assert np.abs(scores - expected_scores).max() <= 1e-5
    assert np.abs(fast.scores(ids, presences) - expected_scores).max() <= 1e-5
    # The comparison means something: the score moves along the path, through many words.
    assert expected_scores.max() - expected_scores.min() > 0.01
    assert np.count_nonzero(np.abs(expected_gradients).max(axis=0) > 1e-4) > len(ids) // 2


@pytest.mark.parametrize(
    ("preset_name", "std", "overrides"),
    [
        # Weights of std 0.5 make the seed's network chaotic: float32 rounding alone moves its
        # gradients by 2e-4 of their size, whichever way they are computed.
        ("seed", 0.3, {}),  # one LSTM's last state, dense layers
        ("reader", 0.3, {}),  # a BiLSTM's mean
        ("tiny", 0.3, {}),  # an LSTM's mean
        ("tiny", 0.5, {"bidirectional": True, "pooling": "last"}),  # both directions' last states
        ("tiny", 0.3, {"bidirectional": True, "bag_buckets": 64}),  # a bag beside (model 6)
    ],
    ids=["seed", "reader", "tiny", "tiny BiLSTM last", "tiny BiLSTM + bag"],
)
def test_the_backward_pass_gives_keras_gradients(preset_name, std, overrides):
    classifier = randomised(preset_name, std=std, **overrides)
    fast = FastPresenceGradients(
        GraphReader(classifier), MAXLEN, gradient_buckets=BUCKETS, score_buckets=BUCKETS
    )
    keras_path = PresenceGradients(classifier, "/CPU:0")
    rng = np.random.default_rng(3)
    vocab_size = get_preset(preset_name).vocab_size
    for length in (MAXLEN, 17):
        ids = rng.integers(2, vocab_size, length)
        assert_same_gradients(fast, keras_path, ids, presences_across_the_path())
    # One word: no step before it, none after.
    gradients, _ = fast(np.array([5]), np.array([0.5]))
    expected, _ = keras_path(np.array([5]), np.array([0.5]))
    assert gradients == pytest.approx(expected, abs=1e-6)


def test_a_graph_with_another_reader_of_the_ids_is_refused():
    classifier = build_classifier(get_preset("default"))  # an embedding mean beside the LSTM
    with pytest.raises(UnsupportedGraph, match="read by more than the LSTM"):
        FastPresenceGradients(
            GraphReader(classifier), MAXLEN, gradient_buckets=BUCKETS, score_buckets=BUCKETS
        )


def test_no_presences_no_rows():
    fast = FastPresenceGradients(GraphReader(randomised("tiny")), MAXLEN, BUCKETS, BUCKETS)
    gradients, scores = fast(np.array([4, 5, 6]), np.array([]))
    assert (gradients.shape, scores.shape) == ((0, 3), (0,))
    assert fast.scores(np.array([4, 5, 6]), np.array([])).shape == (0,)


def test_ids_must_be_one_review_within_maxlen():
    fast = FastPresenceGradients(
        GraphReader(randomised("tiny")), MAXLEN, gradient_buckets=BUCKETS, score_buckets=BUCKETS
    )
    for ids in (np.array([], dtype=np.int64), np.ones(MAXLEN + 1, np.int64), np.ones((2, 3))):
        with pytest.raises(ValueError, match="ids must be"):
            fast.scores(ids, np.array([0.5]))


def test_the_shipped_model_explains_with_the_fast_backward_pass():
    fast_model = ServingModel.load_latest(SHIPPED_MODEL_DIR, device="cpu")
    keras_model = ServingModel.load_latest(SHIPPED_MODEL_DIR, device="cpu-keras")
    assert (fast_model.explain_path, keras_model.explain_path) == ("fast", "keras")
    review = (
        "The first half was slow and I nearly walked out, but the ending was amazing and I "
        "left the cinema smiling. Not bad at all, though the score is forgettable."
    )
    ids = fast_model.token_ids(review)
    presences = np.array([0.0, 1.0, 0.25, 0.5, 0.75, 0.9])
    gradients, scores = fast_model.presence_gradients(ids, presences)
    expected, expected_scores = keras_model.presence_gradients(ids, presences)
    assert np.abs(gradients - expected).max() <= 1e-4 * np.abs(expected).max()
    assert scores == pytest.approx(expected_scores, abs=1e-5)


def test_a_version_the_fast_gradients_refuse_keeps_keras_gradients(tiny_model_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise UnsupportedGraph("a bag beside the LSTM")

    monkeypatch.setattr("server.scoring.model.FastPresenceGradients", refuse)
    model = ServingModel.load_latest(tiny_model_dir, device="cpu")
    model.warm_up()
    assert (model.scoring_path, model.explain_path) == ("fast", "keras")
    assert explain_review(model, "a great film, not a dull minute").convergence_delta is not None


def test_fast_gradients_that_fail_to_compile_fall_back_to_keras(tiny_model_dir, monkeypatch):
    def fail(self):
        raise RuntimeError("an XLA compile fault")

    monkeypatch.setattr(FastPresenceGradients, "compile_all", fail)
    model = ServingModel.load_latest(tiny_model_dir, device="cpu")
    assert model.explain_path == "fast"
    model.warm_up()
    assert (model.explain_path, model.explain_unavailable) == ("keras", None)
    ids = model.token_ids("a great film, not a dull minute")
    gradients, scores = model.presence_gradients(ids, np.array([0.5]))
    assert gradients.shape == (1, len(ids)) and np.isfinite(scores).all()
