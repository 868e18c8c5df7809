"""Explain: attributions on the tiny model (complete, matching Predict's score, words marked),
the relaxation on a classifier with a bag of ids beside its LSTM, and the Explainer's queue."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from server.errors import (
    DeadlineExceededError,
    InferenceError,
    InvalidReviewError,
    QueueFullError,
)
from server.explanations.explain import (
    ABSOLUTE_TOLERANCE,
    BEYOND_MAXLEN,
    OUT_OF_VOCABULARY,
    REMOVED,
    SCORED,
    TOLERANCE,
    Explainer,
    explain_review,
)
from tests.helpers import REVIEWS


def complete(explanation) -> bool:
    gap = explanation.score - explanation.baseline_score
    return abs(explanation.convergence_delta) <= max(TOLERANCE * abs(gap), ABSOLUTE_TOLERANCE)


@pytest.mark.parametrize("review", REVIEWS)
def test_explanations_are_complete_and_score_as_predict_does(serving_model, review):
    explanation = explain_review(serving_model, review)
    assert explanation.score == pytest.approx(serving_model.predict([review])[0], abs=1e-5)
    assert complete(explanation)
    attributed = [w.attribution for w in explanation.words if w.attribution is not None]
    total = sum(attributed)
    assert total == pytest.approx(explanation.score - explanation.baseline_score, abs=1e-3)
    assert explanation.model_version == serving_model.version


def test_words_the_model_never_saw_are_marked_not_zeroed(serving_model):
    maxlen = serving_model.maxlen  # 40 for the tiny preset
    review = "Zzyzx !!! " + " ".join(["dull"] * 5 + ["great"] * (maxlen - 1)) + " 日本語 qwxj."
    explanation = explain_review(serving_model, review)
    found = [(review[w.start : w.end], w.status) for w in explanation.words]
    assert found[0] == ("Zzyzx", BEYOND_MAXLEN)  # the first tokens fall before the last maxlen
    assert found[1] == ("!!!", REMOVED)
    assert [s for _, s in found[2:8]] == [BEYOND_MAXLEN] * 5 + [SCORED]
    assert found[-2] == ("日本語", REMOVED)
    assert found[-1] == ("qwxj", OUT_OF_VOCABULARY)  # [UNK] reached the model: attributed
    for word in explanation.words:
        assert (word.attribution is None) == (word.status in (BEYOND_MAXLEN, REMOVED))
    seen = [w for w in explanation.words if w.attribution is not None]
    assert len(seen) == maxlen


def test_the_baseline_is_the_review_with_every_word_unknown(serving_model):
    review = REVIEWS[0]
    explanation = explain_review(serving_model, review)
    seen = [w for w in explanation.words if w.attribution is not None]
    unknown = " ".join(f"zqxj{chr(97 + i % 26)}{i}" for i in range(len(seen)))
    assert set(serving_model.token_ids(unknown)) == {1}  # every word [UNK]
    assert explanation.baseline_score == pytest.approx(
        serving_model.predict([unknown])[0], abs=1e-5
    )
    # A word the model cannot read is the baseline's word: it moves nothing.
    with_unknown = explain_review(serving_model, review + " qwxjz")
    assert with_unknown.words[-1].status == OUT_OF_VOCABULARY
    assert with_unknown.words[-1].attribution == 0.0


def test_a_review_without_words_gets_predicts_message(serving_model):
    with pytest.raises(InvalidReviewError) as raised:
        explain_review(serving_model, "!!! 😀 …")
    assert raised.value.reason == serving_model.predict(["!!!"])[0].reason


def test_a_standardiser_mirror_that_disagrees_fails_loudly(serving_model):
    class Skewed:
        def __getattr__(self, name):
            return getattr(serving_model, name)

        def token_ids(self, review):
            return serving_model.token_ids(review)[1:]

    with pytest.raises(InferenceError, match="cannot map"):
        explain_review(Skewed(), "a great film")


def _bag_classifier(vocab_size: int = 50):
    """Embedding -> LSTM logit, plus a linear bag of ids (as the "reader" preset has): the
    relaxation must attribute the bag's share too."""
    import keras
    import tensorflow as tf

    class LinearBag(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(vocab_size,), initializer="random_normal")

        def call(self, ids):
            ids = tf.cast(ids, "int64")
            total = tf.reduce_sum(tf.where(ids >= 2, tf.gather(self.w, ids), 0.0), axis=1)
            return 3.0 * total[:, None]

    keras.utils.set_random_seed(1)
    ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(vocab_size, 8, mask_zero=True)(ids)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LSTM(8, return_sequences=True)(x))
    logit = keras.layers.Add()([keras.layers.Dense(1)(x), LinearBag()(ids)])
    return keras.Model(ids, keras.layers.Activation("sigmoid")(logit))


def test_the_relaxation_reaches_a_bag_of_ids_beside_the_lstm():
    classifier = _bag_classifier()
    ids = np.array([5, 9, 2, 31, 5, 17, 44])
    summed, scores = _integrated(classifier, ids)
    assert scores[1] == pytest.approx(float(classifier(ids[None])[0, 0]), abs=1e-6)
    assert summed.sum() == pytest.approx(scores[1] - scores[0], abs=1e-4)
    bag = classifier.layers[-3]  # the bag's weights dominate (x3): its words must stand out
    summed_lstm, _ = _integrated(_without_bag(classifier), ids)
    assert not np.allclose(summed, summed_lstm, atol=1e-3), bag.name


def _integrated(classifier, ids, steps: int = 32):
    """(attributions by a fixed `steps`-node Gauss-Legendre rule, scores at presence 0 and 1),
    from PresenceGradients' two functions."""
    from server.explanations.adaptive_quadrature import gauss_legendre
    from server.scoring.integrated_gradients import PresenceGradients

    path = PresenceGradients(classifier, "/CPU:0")
    nodes, weights = gauss_legendre(steps)
    gradients, at_nodes = path(ids, nodes)
    ends = path.scores(ids, np.array([0.0, 1.0]))
    assert at_nodes == pytest.approx(path.scores(ids, nodes), abs=1e-6)  # the same path
    return weights @ gradients, ends


def _without_bag(classifier):
    import keras

    dense = next(x for x in classifier.layers if isinstance(x, keras.layers.Dense))
    return keras.Model(
        classifier.inputs, keras.layers.Activation("sigmoid")(dense.output), name="lstm_only"
    )


# -- the Explainer's queue -------------------------------------------------------------


class SlowModel:
    """An explainable stand-in whose attribution waits until released."""

    version, decision_threshold, maxlen, standardizer = 3, 0.5, 40, "plain"

    def __init__(self):
        self.release = threading.Event()
        self.started: list[list[int]] = []

    def token_ids(self, review):
        return [2 + i for i, _ in enumerate(review.split())]

    def vocabulary_ids(self, tokens):
        return [2 + i for i, _ in enumerate(tokens)]

    def presence_scores(self, ids, presences):
        if not self.started or self.started[-1] is not ids:
            self.started.append(ids)
            self.release.wait(10)
        return 0.5 + 0.1 * len(ids) * np.asarray(presences)  # a straight path

    def presence_gradients(self, ids, presences):
        return np.full((len(presences), len(ids)), 0.1), self.presence_scores(ids, presences)


class Models:
    def __init__(self, model):
        self.current = model


async def _until(condition, timeout_s=5.0):
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s
        await asyncio.sleep(0.005)


def test_the_explainer_runs_one_at_a_time_refuses_beyond_capacity_and_drops_leavers():
    model = SlowModel()

    async def scenario():
        explainer = Explainer(Models(model), queue_capacity=3)
        deadline_s = time.monotonic() + 10
        first = asyncio.ensure_future(explainer.explain("one two", deadline_s))
        await _until(lambda: model.started)
        left = asyncio.ensure_future(explainer.explain("left early", deadline_s))
        third = asyncio.ensure_future(explainer.explain("three words here", deadline_s))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError, match="3 of 3"):
            await explainer.explain("refused", deadline_s)
        left.cancel()
        await asyncio.gather(left, return_exceptions=True)  # the caller has gone
        model.release.set()
        explained = await first
        assert explained.steps == 8  # a straight path: the 8-node try over the whole path
        assert [w.token for w in explained.words] == ["one", "two"]
        assert [w.attribution for w in explained.words] == pytest.approx([0.1, 0.1])
        assert len((await third).words) == 3
        assert model.started == [[2, 3], [2, 3, 4]]  # the caller that left was never explained
        stats = explainer.stats()
        assert (stats.explained, stats.dropped_cancelled, stats.rejected_full) == (2, 1, 1)
        assert stats.admitted == 0
        await explainer.close()

    asyncio.run(scenario())


def test_a_deadline_that_passes_in_the_queue_ends_the_call():
    model = SlowModel()

    async def scenario():
        explainer = Explainer(Models(model), queue_capacity=4)
        busy = asyncio.ensure_future(explainer.explain("busy", time.monotonic() + 10))
        await _until(lambda: model.started)
        with pytest.raises(DeadlineExceededError):
            await explainer.explain("late", time.monotonic() + 0.05)
        model.release.set()
        await busy
        await _until(lambda: explainer.stats().admitted == 0)
        assert model.started == [[2]]
        await explainer.close()

    asyncio.run(scenario())


def test_the_relaxation_reaches_the_reader_presets_hashed_bigram_bag():
    """The classifier training/model.py builds with a bag (as model 3's "reader" preset has)."""
    import keras

    from training.model import build_classifier, get_preset

    keras.utils.set_random_seed(3)
    classifier = build_classifier(get_preset("tiny", bag_buckets=64))
    bag = classifier.get_layer("bag_logit")
    ids = np.array([5, 9, 2, 31, 5, 17, 44, 1])
    silent, _ = _integrated(classifier, ids)
    rng = np.random.default_rng(0)
    bag.word_weights.assign(rng.normal(0, 2, bag.word_weights.shape).astype("float32"))
    bag.pair_weights.assign(rng.normal(0, 2, bag.pair_weights.shape).astype("float32"))
    summed, scores = _integrated(classifier, ids)
    assert scores[1] == pytest.approx(float(classifier(ids[None])[0, 0]), abs=1e-6)
    assert summed.sum() == pytest.approx(scores[1] - scores[0], abs=1e-4)
    # The bag's words now carry most of the logit: their attributions must show it.
    assert np.abs(summed - silent).max() > 0.05


def _reader_shaped_version(version_dir):
    """An untrained tiny model with model 3's negation standardiser and a bag, saved as a
    servable version (random bag weights, so the bag matters)."""
    import json

    import keras
    import tensorflow as tf

    from tests.conftest import _made_up_reviews
    from training.model import build_model, build_vectorizer, get_preset

    keras.utils.set_random_seed(5)
    preset = get_preset("tiny", standardizer="negation", bag_buckets=64)
    vectorizer = build_vectorizer(preset)
    vectorizer.adapt(tf.constant(_made_up_reviews(100)[0] + ["it does not work isn't"]))
    model = build_model(preset, vectorizer)
    bag = model.get_layer("classifier").get_layer("bag_logit")
    rng = np.random.default_rng(0)
    bag.word_weights.assign(rng.normal(0, 1, bag.word_weights.shape).astype("float32"))
    bag.pair_weights.assign(rng.normal(0, 1, bag.pair_weights.shape).astype("float32"))
    version_dir.mkdir(parents=True)
    model.save(version_dir / "model.keras")
    metadata = {
        "name": "imdb-lstm",
        "version": 1,
        "preset": "tiny",
        "maxlen": preset.maxlen,
        "vocabulary_size": int(vectorizer.vocabulary_size()),
    }
    (version_dir / "metadata.json").write_text(json.dumps(metadata))


def test_a_served_model_with_the_negation_standardiser_and_a_bag_explains(tmp_path):
    """Model 3's shape: "n't" becomes "not" (its span is the "n't"), a bag beside the LSTM."""
    from server.scoring.model import ServingModel

    _reader_shaped_version(tmp_path / "1")
    model = ServingModel.load_latest(tmp_path, device="cpu")
    model.warm_up()
    assert model.standardizer == "negation" and model.explain_unavailable is None
    review = "It DOESN'T work; the plot isn't great!"
    explanation = explain_review(model, review)
    assert [(review[w.start : w.end], w.token) for w in explanation.words][1:3] == [
        ("DOES", "does"),
        ("N'T", "not"),
    ]
    assert explanation.score == pytest.approx(model.predict([review])[0], abs=1e-5)
    assert complete(explanation)
