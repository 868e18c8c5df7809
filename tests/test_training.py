"""Training, the model format and evaluation, on data made by the test (seconds, CPU)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.imdb_fixture import make_archive
from training import data as imdb
from training import evaluate, metrics, splits, train, versions
from training.layers import KeepLastTokens, standardize_review
from training.model import build_model, build_vectorizer, get_preset, trainable_parameters


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    dataset = imdb.load(make_archive(root, per_class=150))  # 300 train, 300 test reviews
    out = root / "models" / "imdb-lstm"
    version_dir = train.train(dataset, get_preset("tiny", max_epochs=2), out, seed=7, verbose=0)
    return dataset, out, version_dir


def test_writes_a_complete_versioned_directory(tiny_run):
    _, out, version_dir = tiny_run
    assert version_dir == out / "1"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["1"]
    for name in (
        "model.keras",
        "metadata.json",
        "history.json",
        "report/report.md",
        "report/metrics.json",
        "report/roc.png",
        "report/confusion.png",
        "report/training.png",
    ):
        assert (version_dir / name).is_file(), name
    metadata = json.loads((version_dir / "metadata.json").read_text())
    assert metadata["version"] == 1 and metadata["preset"] == "tiny"
    assert metadata["maxlen"] == 40 and 0.3 <= metadata["decision_threshold"] <= 0.7
    assert metadata["data"]["validation_reviews"] == 60  # 20%, in blocks of 3 ids per label
    assert metadata["data"]["train_reviews"] == 240
    assert len(metadata["data"]["sha256"]) == 64
    assert set(metadata["versions"]) >= {"tensorflow", "keras"}
    assert set(metadata["metrics"]) == {"validation", "test"}
    assert metadata["metrics"]["test"]["examples"] == 300
    # The cues are unambiguous: even two tiny epochs learn them.
    assert metadata["metrics"]["test"]["accuracy"] > 0.8


def test_next_version_increments(tiny_run):
    _, out, _ = tiny_run
    assert train.next_version(out) == 2


def test_reloads_in_safe_mode_with_the_same_scores(tiny_run):
    dataset, _, version_dir = tiny_run
    reloaded = versions.load_model(version_dir / "model.keras")
    texts = dataset.test.texts[:50]
    expected = json.loads((version_dir / "report" / "metrics.json").read_text())["test"]
    scores = metrics.score_texts(reloaded, dataset.test.texts)
    threshold = json.loads((version_dir / "metadata.json").read_text())["decision_threshold"]
    again = metrics.classification_metrics(dataset.test.labels, scores, threshold)
    assert again["accuracy"] == expected["accuracy"]
    assert again["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-9)
    one_by_one = [float(reloaded(tf.constant([t]))[0, 0]) for t in texts[:5]]
    np.testing.assert_allclose(one_by_one, metrics.score_texts(reloaded, texts)[:5], atol=1e-5)


def test_validation_split_is_shuffled_stratified_and_disjoint():
    split = imdb.Split([f"r{i}" for i in range(100)], np.array([0] * 50 + [1] * 50))
    fit, val = splits.split_train_validation(split, 0.2, seed=3)
    assert len(val) == 20 and len(fit) == 80
    assert not set(fit.texts) & set(val.texts)
    assert val.labels.sum() == 10  # both classes, unlike Keras' last-20% split
    assert fit.labels[:40].sum() not in (0, 40)  # shuffled, not label-sorted


def test_validation_keeps_blocks_of_consecutive_ids_together():
    # 12,500 reviews per label: blocks of 100 consecutive ids (one movie's
    # reviews are neighbours) go wholly to one side.
    n = 12_500
    ids = np.concatenate([np.arange(n), np.arange(n)])
    split = imdb.Split([f"r{i}" for i in range(2 * n)], np.array([0] * n + [1] * n), ids)
    fit, val = splits.split_train_validation(split, 0.2, seed=5)
    assert len(val) == 5000
    val_blocks = {(int(label), int(i) // 100) for label, i in zip(val.labels, val.ids, strict=True)}
    fit_blocks = {(int(label), int(i) // 100) for label, i in zip(fit.labels, fit.ids, strict=True)}
    assert len(val_blocks) == 50 and not val_blocks & fit_blocks


def test_seed_preset_has_the_reports_parameter_count():
    preset = get_preset("seed")
    vectorizer = build_vectorizer(preset)
    vectorizer.adapt(tf.constant([f"word{i}" for i in range(50)]))
    assert trainable_parameters(build_model(preset, vectorizer)) == 349_057


def test_standardize_strips_breaks_and_punctuation():
    out = standardize_review(tf.constant(["Great<br /><br />FILM!!! It's 10/10."]))
    assert out.numpy()[0].decode().split() == ["great", "film", "it", "s", "10", "10"]


def test_keep_last_tokens_keeps_the_end_right_padded():
    ids = tf.constant([[5, 6, 7, 8, 9], [3, 4, 0, 0, 0], [0, 0, 0, 0, 0]])
    kept = KeepLastTokens(3)(ids).numpy().tolist()
    assert kept == [[7, 8, 9], [3, 4, 0], [0, 0, 0]]


def test_metrics_on_hand_made_labels():
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    m = metrics.classification_metrics(labels, scores, 0.5)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    # 8 of the 9 positive/negative pairs are ranked correctly.
    assert m["roc_auc"] == pytest.approx(8 / 9)


def test_loading_a_file_that_is_not_a_model(tmp_path):
    fake = tmp_path / "model.keras"
    fake.write_text("not a zip archive")
    with pytest.raises(versions.ModelLoadError, match=f"{fake}: not a loadable Keras model"):
        versions.load_model(fake)


def test_eval_cli_reproduces_the_written_report(tiny_run, tmp_path, monkeypatch):
    dataset, out, version_dir = tiny_run
    monkeypatch.setenv(imdb.ENV_VAR, str(dataset.source))
    assert evaluate.main(["--model-dir", str(out), "--out", str(tmp_path)]) == 0
    fresh = json.loads((tmp_path / "metrics.json").read_text())
    shipped = json.loads((version_dir / "report" / "metrics.json").read_text())
    assert fresh["test"] == shipped["test"]
    assert fresh["tfidf_logreg_baseline"] == shipped["tfidf_logreg_baseline"]


def test_eval_cli_on_a_missing_model_dir(tmp_path, capsys):
    assert evaluate.main(["--model-dir", str(tmp_path / "none")]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_threshold_is_chosen_for_validation_accuracy():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.35, 0.62, 0.64, 0.8, 0.9])
    assert train.choose_threshold(labels, scores) == pytest.approx(0.63)
    # Every threshold in a wide band is perfect here: the one nearest 0.5 wins.
    assert train.choose_threshold(labels, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])) == 0.5


def test_an_existing_version_is_refused_before_training(tiny_run):
    dataset, out, _ = tiny_run
    with pytest.raises(FileExistsError, match="already exists"):
        train.train(dataset, get_preset("tiny", max_epochs=50), out, version=1, verbose=0)


def test_distilled_run_trains_on_soft_targets_and_counts_against_labels(tiny_run, tmp_path):
    dataset, _, _ = tiny_run
    preset = get_preset("tiny", max_epochs=2, distillation=0.5, teacher_folds="movies")
    version_dir = train.train(dataset, preset, tmp_path, seed=7, report=False, verbose=0)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    assert metadata["hyperparameters"]["distillation"] == 0.5
    assert metadata["hyperparameters"]["teacher_folds"] == "movies"
    history = json.loads((version_dir / "history.json").read_text())
    # Exact comparison with soft targets would count 0 right; the labels they lean to are learnable.
    assert history["accuracy"][-1] > 0.8
    assert metadata["metrics"]["validation"]["accuracy"] > 0.8


def test_a_distillation_weight_over_half_is_refused_before_any_data_is_read(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    assert train.main(["--data", str(missing), "--set", "distillation=0.7"]) == 2
    error = capsys.readouterr().err
    assert "distillation must be in [0, 0.5]" in error and str(missing) not in error


def test_an_unknown_teacher_fold_scheme_is_refused(capsys):
    assert train.main(["--set", "teacher_folds=films"]) == 2
    assert "teacher_folds must be one of ('reviews', 'movies')" in capsys.readouterr().err
