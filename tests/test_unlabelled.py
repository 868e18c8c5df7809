"""The unlabelled reviews: their loader, the teacher's scores of them, and a tiny student run."""

from __future__ import annotations

import json
import random
import tarfile

import numpy as np
import pytest

from tests.imdb_fixture import make_aclimdb, review
from training import data as imdb
from training import soft_labels, train
from training.mix import SoftLabelled, build_mix
from training.model import get_preset
from training.splits import split_train_validation


def make_unsup(base, count: int = 30, seed: int = 1) -> list[str]:
    """Writes base/train/unsup/<id>_0.txt (base is an aclImdb folder); returns the texts."""
    rng = random.Random(seed)
    folder = base / "train" / "unsup"
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(count):
        texts.append(review(rng, rng.random() < 0.5).replace("<br /><br />", " "))
        (folder / f"{i * 3}_0.txt").write_text(texts[-1], encoding="utf-8")
    return texts


def tar(folder, archive):
    with tarfile.open(archive, "w:gz") as out:
        out.add(folder, arcname="aclImdb")
    return archive


@pytest.fixture()
def full_tree(tmp_path):
    base = make_aclimdb(tmp_path / "full", per_class=20)
    make_unsup(base)
    return base


def test_reads_the_unsup_archive_a_directory_and_a_full_archive_alike(full_tree, tmp_path):
    only_unsup = tmp_path / "unsup-only" / "aclImdb"
    only_unsup.mkdir(parents=True)
    (full_tree / "train" / "unsup").rename(only_unsup / "unsup-moved")
    (only_unsup / "train").mkdir()
    (only_unsup / "unsup-moved").rename(only_unsup / "train" / "unsup")
    unsup_archive = tar(only_unsup, tmp_path / "aclImdb-unsup.tar.gz")
    make_unsup(full_tree)  # the full tree gets the same reviews back
    full_archive = tar(full_tree, tmp_path / "aclImdb_v1.tar.gz")

    loaded = [imdb.load_unlabelled(p) for p in (unsup_archive, only_unsup, full_archive)]
    assert [len(u) for u in loaded] == [30, 30, 30]
    assert loaded[0].texts == loaded[1].texts == loaded[2].texts
    assert loaded[0].ids.tolist() == list(range(0, 90, 3))
    # The full archive still loads as labelled data, unsup left out of both splits.
    assert len(imdb.load(full_archive).train) == 40


def test_a_test_review_slipped_in_is_dropped_and_counted(full_tree):
    dataset = imdb.load(full_tree)
    slipped = dataset.test.texts[5]
    # As in the shared copy: the HTML breaks gone, the text otherwise the same.
    (full_tree / "train" / "unsup" / "500_0.txt").write_text(
        slipped.replace("<br /><br />", ""), encoding="utf-8"
    )
    unlabelled = imdb.load_unlabelled(full_tree, dataset.test.texts)
    assert unlabelled.dropped_test_reviews == 1 and len(unlabelled) == 30
    assert 500 not in unlabelled.ids.tolist()
    assert len(imdb.load_unlabelled(full_tree)) == 31  # without the test texts, kept


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("7_0.txt", b"\xff\xfe not utf-8", "7_0.txt: not UTF-8 text"),
        ("8_0.txt", b"   \n", "8_0.txt: an empty review"),
        ("notes.txt", b"a review", "notes.txt: not an unlabelled review's name"),
    ],
)
def test_a_malformed_file_is_one_error_naming_it(full_tree, name, content, message):
    (full_tree / "train" / "unsup" / name).write_bytes(content)
    with pytest.raises(imdb.DataError, match=message):
        imdb.load_unlabelled(full_tree)
    archive = tar(full_tree, full_tree.parent / "broken.tar.gz")
    with pytest.raises(imdb.DataError, match=f"aclImdb/train/unsup/{message}"):
        imdb.load_unlabelled(archive)


def test_missing_data_is_one_error(tmp_path, monkeypatch):
    monkeypatch.delenv(imdb.UNLABELLED_ENV_VAR, raising=False)
    with pytest.raises(imdb.DataError, match="no such file or directory"):
        imdb.load_unlabelled(tmp_path / "nowhere.tar.gz")
    with pytest.raises(imdb.DataError, match="--unlabelled-data"):
        imdb.load_unlabelled(None)
    labelled_only = make_aclimdb(tmp_path / "labelled", per_class=2)
    with pytest.raises(imdb.DataError, match="no unlabelled reviews found"):
        imdb.load_unlabelled(labelled_only)


def test_train_cli_exits_2_with_one_line_for_missing_unlabelled_data(full_tree, tmp_path, capsys):
    code = train.main(
        ["--data", str(full_tree), "--preset", "tiny", "--set", "unlabelled=true",
         "--unlabelled-data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "nowhere: no such file or directory" in err


def test_without_unlabelled_data_train_says_so_in_one_line_and_trains(
    full_tree, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv(imdb.UNLABELLED_ENV_VAR, raising=False)
    out = tmp_path / "m"
    code = train.main(
        ["--data", str(full_tree), "--preset", "tiny", "--set", "unlabelled=true",
         "--out", str(out), "--no-report"]
    )  # fmt: skip
    said = [line for line in capsys.readouterr().out.splitlines() if "unlabelled review" in line]
    assert code == 0 and said == [
        "sentiment-train: no unlabelled reviews given (--unlabelled-data): training on the "
        "labelled data alone"
    ]
    metadata = json.loads((out / "1" / "metadata.json").read_text())
    assert metadata["hyperparameters"]["unlabelled"] is False


def test_the_mix_takes_soft_targets_and_never_a_validation_text(full_tree):
    dataset = imdb.load(full_tree)
    fit, validation = split_train_validation(dataset.train, 0.2, seed=3)
    texts = ["a new review", validation.texts[0].replace("<br />", ""), "another one"]
    soft = SoftLabelled(texts, np.array([0.9, 0.2, 0.35], dtype=np.float32))
    mix = build_mix(get_preset("tiny"), fit, validation, dataset.test, None, soft)
    assert mix.texts[len(fit) :] == ["a new review", "another one"]
    np.testing.assert_allclose(mix.labels[len(fit) :], [0.9, 0.35])
    assert mix.counts["unlabelled reviews dropped (a validation text)"] == 1


def test_teacher_scores_then_a_tiny_student_learns_from_them(full_tree, tmp_path):
    dataset = imdb.load(full_tree)
    unlabelled = imdb.load_unlabelled(full_tree, dataset.test.texts)
    scores, record = soft_labels.teach(dataset, unlabelled, seed=3, log=lambda _: None)
    # The fixture's reviews are separable by their cue words: the teacher must see it.
    cues = np.array([("great" in t.lower()) or ("superb" in t.lower()) for t in unlabelled.texts])
    assert scores.shape == (30,) and 0.0 < scores.min() and scores.max() < 1.0
    assert record["validation"]["n-gram"]["accuracy"] >= 0.75
    assert scores[cues].mean() > scores[~cues].mean()
    teacher_dir = tmp_path / "teacher"
    soft_labels.write(teacher_dir, unlabelled, scores, record)
    read, _ = soft_labels.read(teacher_dir, unlabelled, seed=3)
    np.testing.assert_array_equal(read, scores)
    with pytest.raises(imdb.DataError, match="made for seed 3, not 4"):
        soft_labels.read(teacher_dir, unlabelled, seed=4)

    out = tmp_path / "m"
    code = train.main(
        ["--data", str(full_tree), "--preset", "tiny", "--set", "unlabelled=true",
         "--unlabelled-data", str(full_tree), "--teacher-scores", str(teacher_dir),
         "--seed", "3", "--out", str(out), "--no-report"]
    )  # fmt: skip
    metadata = json.loads((out / "1" / "metadata.json").read_text())
    assert code == 0 and metadata["hyperparameters"]["unlabelled"] is True
    assert metadata["data"]["mix"]["unlabelled reviews (teacher's scores)"] == 30
