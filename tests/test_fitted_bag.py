"""The bag fitted beside a trained LSTM (training/fitted_bag.py): its features are the layer's,
its weights learn the cue words, the whole model adds it to an untouched LSTM, and a tiny
`make train` run and `sentiment-fit-bag` on a trained version both choose it on validation."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.extra_fixture import make_labelled_data
from training import add_bag, extra_data, fitted_bag, metrics, train, versions
from training.layers import HashedBigramBag
from training.model import build_model, build_vectorizer, get_preset, lstm_path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_labelled_data(tmp_path_factory.mktemp("bag"))


def test_the_features_times_the_weights_are_the_layers_logit():
    vocab_size, buckets = 40, 16
    rng = np.random.default_rng(1)
    rows = [rng.integers(0, vocab_size, n) for n in (1, 2, 7, 30)]  # ids 0 and 1 included
    rows.append(np.array([1, 1]))  # no real token: scores 0
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    bag = HashedBigramBag(vocab_size, buckets)
    bag.build((None, None))
    weights = rng.normal(size=vocab_size + buckets).astype(np.float32)
    bag.word_weights.assign(weights[:vocab_size])
    bag.pair_weights.assign(weights[vocab_size:])

    features = fitted_bag.bag_features([r[r > 0] for r in rows], vocab_size, buckets)
    np.testing.assert_allclose(features @ weights, bag(ids).numpy().ravel(), rtol=1e-5, atol=1e-6)
    assert features[-1].nnz == 0


def test_nbsvm_weights_lean_each_cue_word_to_its_label():
    # Ids 2..4 come with positive texts, 5..7 with negative ones, 8 with both.
    rng = np.random.default_rng(2)
    rows, labels = [], []
    for _ in range(200):
        label = int(rng.random() < 0.5)
        cues = [2, 3, 4] if label else [5, 6, 7]
        rows.append(np.array([rng.choice(cues), 8, rng.choice(cues), 8]))
        labels.append(label)
    features = fitted_bag.bag_features(rows, 10, 8)
    weights = fitted_bag.fit_nbsvm(features, np.array(labels), c=1.0)
    assert weights[2:5].min() > 0 > weights[5:8].max()
    assert abs(weights[8]) < weights[2:5].min()


def test_the_whole_model_adds_the_bag_to_an_untouched_lstm(data):
    _, dataset, _ = data
    preset = get_preset("tiny")
    vectorizer = build_vectorizer(preset)
    vectorizer.adapt(tf.constant(dataset.train.texts))
    model = build_model(preset, vectorizer)
    rng = np.random.default_rng(3)
    weights = rng.normal(0, 0.5, preset.vocab_size + 64).astype(np.float32)
    whole = fitted_bag.with_bag(model, preset, weights, 64)

    texts = dataset.test.texts[:40]
    alone = metrics.score_texts(model, texts).astype(np.float64)
    bag = fitted_bag.bag_features(fitted_bag.token_ids(model, texts), preset.vocab_size, 64)
    expected = 1 / (1 + np.exp(-(np.log(alone / (1 - alone)) + bag @ weights)))
    np.testing.assert_allclose(metrics.score_texts(whole, texts), expected, atol=1e-5)
    np.testing.assert_allclose(metrics.score_texts(lstm_path(whole), texts), alone, atol=1e-6)


def test_a_tiny_student_bag_run_fits_its_bag_on_validation(data, tmp_path):
    archive, dataset, extra_root = data
    extra = extra_data.load(extra_root, dataset.train.texts)
    preset = get_preset(
        "tiny", data_mix="imdb+sst2+cad", standardizer="negation", fitted_bag_buckets=256
    )
    version_dir = train.train(
        dataset, preset, tmp_path / "m", seed=3, verbose=0, extra=extra, report=False
    )
    metadata = json.loads((version_dir / "metadata.json").read_text())
    bag, selection = metadata["bag"], metadata["selection"]
    grid = len(fitted_bag.REGULARISATIONS) * len(fitted_bag.WEIGHTS)
    assert len(bag["grid"]) == grid
    best = max(bag["grid"], key=lambda g: (g["selection_score"], g["imdb_validation_auc"]))
    assert (bag["c"], bag["weight"]) == (best["c"], best["weight"])
    scores = selection["selection_scores"]
    assert scores["whole model"] == pytest.approx(best["selection_score"])
    model = versions.load_model(version_dir / "model.keras")
    assert (lstm_path(model) is not None) == (selection["shipped"] == "whole model")


def test_fit_bag_cli_writes_the_next_version_from_a_trained_one(data, tmp_path, capsys):
    archive, dataset, extra_root = data
    extra = extra_data.load(extra_root, dataset.train.texts)
    out = tmp_path / "imdb-lstm"
    preset = get_preset("tiny", data_mix="imdb+sst2+cad", standardizer="negation", max_epochs=1)
    base = train.train(dataset, preset, out, seed=3, verbose=0, extra=extra, report=False)
    argv = ["--base", str(base), "--data", str(archive), "--extra-data", str(extra_root)]
    argv += ["--buckets", "256"]
    code = add_bag.main([*argv, "--no-report"])
    printed = capsys.readouterr().out
    # One epoch leaves the LSTM weak on the fixture's cue words, which the bag reads well.
    assert code == 0 and "shipping the whole model" in printed, printed[-500:]
    metadata = json.loads((out / "2" / "metadata.json").read_text())
    assert metadata["base_version"] == 1 and metadata["preset"] == "tiny-bag"
    assert metadata["hyperparameters"]["fitted_bag_buckets"] == 256
    model = versions.load_model(out / "2" / "model.keras")
    base_model = versions.load_model(base / "model.keras")
    texts = dataset.test.texts[:20]
    np.testing.assert_allclose(
        metrics.score_texts(lstm_path(model), texts), metrics.score_texts(base_model, texts),
        atol=1e-6,
    )  # fmt: skip
    # A version with a fitted bag as the base: its LSTM as it was, a new bag in the old one's place.
    assert add_bag.main(["--base", str(out / "2"), *argv[2:], "--no-report"]) == 0
    capsys.readouterr()
    metadata = json.loads((out / "3" / "metadata.json").read_text())
    assert metadata["base_version"] == 2 and metadata["preset"] == "tiny-bag"
    refitted = versions.load_model(out / "3" / "model.keras")
    np.testing.assert_allclose(
        metrics.score_texts(lstm_path(refitted), texts), metrics.score_texts(base_model, texts),
        atol=1e-6,
    )  # fmt: skip
    # A bag trained with the LSTM (the reader preset's) leaves no LSTM alone: refused in one line.
    trained_with_bag = tmp_path / "trained-with-bag"
    shutil.copytree(base, trained_with_bag)
    metadata = json.loads((trained_with_bag / "metadata.json").read_text())
    metadata["hyperparameters"]["bag_buckets"] = 256
    (trained_with_bag / "metadata.json").write_text(json.dumps(metadata))
    assert add_bag.main(["--base", str(trained_with_bag), *argv[2:], "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "trained with its LSTM" in err


def test_fit_bag_cli_names_a_missing_base(tmp_path, capsys):
    assert add_bag.main(["--base", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere" in err
