"""Language-model pretraining (training/pretrain.py) on tiny models and made-up text."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.imdb_fixture import make_archive
from training import data as imdb
from training import train
from training.model import build_models, build_vectorizer, get_preset
from training.pretrain import NextWordHead, language_model_loss, pretrain_language_model

UNITS = 3


def states_and_ids():
    # Two rows, right-padded: [5, 1(OOV), 7, 0] and [4, 0, 0, 0].
    ids = tf.constant([[5, 1, 7, 0], [4, 0, 0, 0]])
    states = tf.random.stateless_normal((2, 4, 2 * UNITS), seed=(1, 2))
    return states, ids


def with_nan(states, row, step, channels):
    values = states.numpy()
    values[row, step, channels] = np.nan
    return tf.constant(values)


@pytest.mark.parametrize(
    "row, step, channels",
    [
        (0, 3, slice(None)),  # padding reads nothing and predicts nothing
        (1, 0, slice(0, UNITS)),  # forward state of a one-word row: its next is padding
        (1, 0, slice(UNITS, None)),  # backward state of a one-word row: nothing before it
        (0, 0, slice(0, UNITS)),  # forward state whose next token is OOV: no word to predict
        (0, 2, slice(UNITS, None)),  # backward state whose previous token is OOV
        (0, 0, slice(UNITS, None)),  # backward state at the first token: nothing before it
        (0, 2, slice(0, UNITS)),  # forward state at the last token: padding after it
    ],
)
def test_states_that_predict_no_word_never_reach_the_loss(row, step, channels):
    head = NextWordHead(vocab_size=10, units=UNITS)
    states, ids = states_and_ids()
    loss = language_model_loss(head, with_nan(states, row, step, channels), ids, UNITS, True)
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("step, channels", [(1, slice(0, UNITS)), (1, slice(UNITS, None))])
def test_states_that_predict_a_word_do_reach_the_loss(step, channels):
    # Row 0's OOV at step 1 is read: forward it predicts 7, backward it predicts 5.
    head = NextWordHead(vocab_size=10, units=UNITS)
    states, ids = states_and_ids()
    loss = language_model_loss(head, with_nan(states, 0, step, channels), ids, UNITS, True)
    assert np.isnan(float(loss))


class RecordingHead(NextWordHead):
    """Records which states predict which targets, instead of a loss."""

    def sampled_loss(self, states, targets, real):
        self.pairs.append(
            list(
                zip(
                    tf.boolean_mask(states, real)[:, 0].numpy().tolist(),
                    tf.boolean_mask(targets, real).numpy().tolist(),
                    strict=True,
                )
            )
        )
        return tf.constant(0.0)


def test_forward_states_predict_the_next_word_and_backward_ones_the_word_before():
    head = RecordingHead(vocab_size=10, units=UNITS)
    head.pairs = []
    ids = tf.constant([[5, 6, 1, 8, 0]])  # 1 is OOV, 0 padding
    steps = np.arange(5, dtype=np.float32)[None, :, None]
    # Each state holds its step: forward channels t, backward channels 100 + t.
    states = tf.constant(
        np.concatenate([np.repeat(steps, UNITS, 2), np.repeat(100 + steps, UNITS, 2)], axis=2)
    )
    language_model_loss(head, states, ids, UNITS, bidirectional=True)
    forward, backward = head.pairs
    assert forward == [(0.0, 6), (2.0, 8)]  # step 1 would predict OOV, step 3 padding
    assert backward == [(101.0, 5), (102.0, 6)]  # step 3 would predict OOV, step 4 is padding


def test_a_bidirectional_layers_backward_state_at_a_step_has_read_from_there_to_the_end():
    # What language_model_loss takes the Bidirectional layer's output to be.
    keras.utils.set_random_seed(0)
    embedding = keras.layers.Embedding(10, 4, mask_zero=True)
    lstm = keras.layers.Bidirectional(keras.layers.LSTM(UNITS, return_sequences=True))
    ids = np.array([[5, 6, 7, 0, 0]])

    def states(row):
        row = tf.constant(row)
        return lstm(embedding(row), mask=row != 0).numpy()[0]

    whole = states(ids)
    for step in range(3):
        suffix = np.zeros_like(ids)
        suffix[0, : 3 - step] = ids[0, step:3]
        prefix = np.where(np.arange(5) <= step, ids, 0)
        np.testing.assert_allclose(whole[step, UNITS:], states(suffix)[0, UNITS:], atol=1e-6)
        np.testing.assert_allclose(whole[step, :UNITS], states(prefix)[step, :UNITS], atol=1e-6)


def test_a_batch_with_no_word_to_predict_has_zero_loss_not_nan():
    head = NextWordHead(vocab_size=10, units=UNITS)
    ids = tf.constant([[5, 0], [6, 0]])  # one word each
    states = tf.ones((2, 2, 2 * UNITS))
    assert float(language_model_loss(head, states, ids, UNITS, True)) == 0.0


def texts():
    rng = np.random.default_rng(0)
    patterns = ["the film was good and i liked it", "a dull plot and bad acting", "not bad at all"]
    return [patterns[i] for i in rng.integers(0, len(patterns), 300)]


def test_pretraining_moves_the_embedding_and_lstm_only_and_learns_the_text():
    keras.utils.set_random_seed(0)
    preset = get_preset("tiny", pooling="mean", bidirectional=True)
    vectorizer = build_vectorizer(preset)
    corpus = texts()
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(corpus).batch(64))
    model, _ = build_models(preset, vectorizer)
    classifier = model.get_layer("classifier")
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in classifier.layers}
    losses = pretrain_language_model(
        model, corpus, epochs=3, batch_size=32, learning_rate=1e-2, seed=0
    )
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0]  # three fixed sentences: the next word is learnable
    for layer in classifier.layers:
        moved = any(
            not np.array_equal(old, new)
            for old, new in zip(before[layer.name], layer.get_weights(), strict=True)
        )
        assert moved == (layer.name in ("embedding", "bilstm")), layer.name


def test_pretraining_is_refused_for_a_model_that_keeps_only_the_last_state():
    with pytest.raises(ValueError, match="lm_epochs"):
        get_preset("seed", lm_epochs=1)
    with pytest.raises(ValueError, match="lm_epochs"):
        get_preset("tiny", lm_epochs=-1)


def test_a_training_run_with_pretraining_records_it(tmp_path):
    dataset = imdb.load(make_archive(tmp_path, per_class=60))
    preset = get_preset("tiny", max_epochs=1, lm_epochs=2)
    version_dir = train.train(dataset, preset, tmp_path / "out", seed=3, report=False, verbose=0)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    record = metadata["training"]["language_model"]
    # Training texts only, each once (this fixture has no two reviews alike; IMDB has some).
    assert record["texts"] == metadata["data"]["train_reviews"]
    assert len(record["losses"]) == 2 and np.isfinite(record["losses"]).all()
    assert metadata["hyperparameters"]["lm_epochs"] == 2
