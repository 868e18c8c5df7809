"""Adversarial fine-tuning on the word vectors (training/adversarial.py): the step's size and
direction, a perturbation that raises the loss, weights shared with the served graph, an epoch
kept only when it beats the base on validation, and the CLI on a tiny trained version."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.extra_fixture import make_labelled_data
from training import adversarial, extra_data, metrics, train, versions
from training.mix import Labelled
from training.model import get_preset, lstm_path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_labelled_data(tmp_path_factory.mktemp("adversarial"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny trained version over the labelled mix, with its dataset and extra data."""
    archive, dataset, extra_root = data
    extra = extra_data.load(extra_root, dataset.train.texts)
    preset = get_preset("tiny", data_mix="imdb+sst2+cad", standardizer="negation", max_epochs=1)
    out = tmp_path_factory.mktemp("versions") / "imdb-lstm"
    base = train.train(dataset, preset, out, seed=3, verbose=0, extra=extra, report=False)
    return base, dataset, extra


def training_setup(trained):
    """(the base model, its noise layer, the training graph over it, 64 texts, their labels)."""
    base, dataset, _ = trained
    model = versions.load_model(base / "model.keras")
    noise = adversarial.EmbeddingNoise()
    trainer = adversarial.training_graph(model, noise)
    texts = tf.constant(dataset.train.texts[:64])
    targets = tf.constant(dataset.train.labels[:64], tf.float32)
    return model, noise, trainer, texts, targets


def test_the_step_is_epsilon_times_the_real_vectors_norm_along_the_gradient():
    rng = np.random.default_rng(0)
    vectors = tf.constant(rng.normal(size=(2, 5, 3)), tf.float32)
    gradient = tf.constant(rng.normal(size=(2, 5, 3)), tf.float32)
    mask = tf.constant([[True] * 3 + [False] * 2, [True] * 5])
    step = adversarial.adversarial_perturbation(vectors, gradient, mask, 0.1).numpy()

    assert not step[0, 3:].any()  # nothing moves on padding
    for row, length in enumerate((3, 5)):
        real_vectors = vectors.numpy()[row, :length]
        np.testing.assert_allclose(
            np.linalg.norm(step[row]), 0.1 * np.linalg.norm(real_vectors), rtol=1e-5
        )
        direction = gradient.numpy()[row, :length].ravel()
        cosine = step[row, :length].ravel() @ direction
        cosine /= np.linalg.norm(step[row]) * np.linalg.norm(direction)
        assert cosine == pytest.approx(1.0, abs=1e-5)


def test_the_step_raises_the_loss_and_training_moves_the_served_models_weights(trained):
    _, dataset, _ = trained
    model, noise, trainer, texts, targets = training_setup(trained)
    loss_fn = keras.losses.BinaryCrossentropy()

    with tf.GradientTape() as tape:
        clean = loss_fn(targets, trainer(texts, training=False))
    gradient = tape.gradient(clean, noise.seen)
    noise.perturbation = adversarial.adversarial_perturbation(
        noise.seen, gradient, noise.seen_mask, 0.05
    )
    raised = loss_fn(targets, trainer(texts, training=False))
    noise.perturbation = -noise.perturbation  # the opposite way lowers it
    lowered = loss_fn(targets, trainer(texts, training=False))
    noise.perturbation = None
    assert float(lowered) < float(clean) < float(raised)
    # Without a perturbation the training graph scores as the served model does.
    np.testing.assert_allclose(
        trainer(texts, training=False).numpy(), model(texts, training=False).numpy(), atol=1e-6
    )

    before = metrics.score_texts(model, dataset.test.texts[:20])
    step = adversarial.make_train_step(trainer, noise, 0.05, learning_rate=1e-2)
    clean, raised = step(texts, targets)
    assert float(raised) > float(clean)
    assert not np.allclose(metrics.score_texts(model, dataset.test.texts[:20]), before)


def test_an_epoch_that_does_not_beat_the_base_is_not_kept(trained):
    base, dataset, extra = trained
    model = versions.load_model(base / "model.keras")
    sets = {"IMDB validation": Labelled("IMDB validation", dataset.test)}
    sets.update(extra.validation_sets())
    weights = model.get_weights()
    record = adversarial.fine_tune(
        model,
        dataset.train.texts,
        dataset.train.labels,
        sets,
        epsilon=0.05,
        learning_rate=0.0,  # the weights cannot move, so no epoch scores above the base
        batch_size=32,
        epochs=2,
        patience=1,
        seed=0,
        log=lambda line: None,
    )
    assert record["best_epoch"] == 0 and len(record["history"]["epochs"]) == 1
    for kept, original in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(kept, original)


def test_finetune_cli_writes_the_next_version_with_its_bag(data, trained, tmp_path, capsys):
    archive, _, extra_root = data
    base, dataset, extra = trained
    out = tmp_path / "imdb-lstm"
    argv = ["--base", str(base), "--data", str(archive), "--extra-data", str(extra_root)]
    argv += ["--out", str(out), "--version", "7", "--epochs", "2", "--epsilon", "0.05"]
    argv += ["--learning-rate", "5e-3", "--bag-buckets", "256", "--no-report"]
    code = adversarial.main(argv)
    printed = capsys.readouterr().out
    # One epoch left the base weak on the fixture's cue words: the fine-tuning gains on them.
    assert code == 0 and "wrote" in printed, printed[-500:]
    metadata = json.loads((out / "7" / "metadata.json").read_text())
    record = metadata["adversarial"]
    assert metadata["base_version"] == 1 and record["epsilon"] == 0.05
    assert record["best_epoch"] >= 1
    scores = [e["selection score"] for e in record["history"]["epochs"]]
    assert scores[record["best_epoch"] - 1] == max(scores)
    assert max(scores) > record["history"]["base"]["selection score"]
    model = versions.load_model(out / "7" / "model.keras")
    whole = lstm_path(model) is not None
    assert metadata["hyperparameters"]["fitted_bag_buckets"] == (256 if whole else 0)
    assert metadata["preset"] == "tiny-adversarial" + ("-bag" if whole else "")


def test_finetune_cli_names_a_missing_base(tmp_path, capsys):
    assert adversarial.main(["--base", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere" in err


def test_epsilon_zero_is_plain_fine_tuning(trained):
    model, noise, trainer, texts, targets = training_setup(trained)
    before = [w.copy() for w in model.get_weights()]
    step = adversarial.make_train_step(trainer, noise, 0.0, learning_rate=1e-2)
    clean, second = step(texts, targets)
    assert float(clean) == float(second) and noise.perturbation is None
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
