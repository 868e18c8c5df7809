"""The IMDB loader: directory and .tar.gz layouts, and clear errors for bad paths."""

import gzip
import subprocess
import sys

import pytest

from tests.imdb_fixture import make_aclimdb, make_archive
from training import data as imdb


def test_loads_directory_and_archive_identically(tmp_path):
    tree = make_aclimdb(tmp_path / "dir", per_class=7)
    archive = make_archive(tmp_path / "tar", per_class=7)

    from_dir = imdb.load(tree)
    from_tar = imdb.load(archive)

    for loaded in (from_dir, from_tar):
        assert len(loaded.train) == 14 and len(loaded.test) == 14
        assert sorted(loaded.train.labels.tolist()) == [0] * 7 + [1] * 7
    assert from_dir.train.texts == from_tar.train.texts
    assert from_dir.test.labels.tolist() == from_tar.test.labels.tolist()
    assert len(from_tar.sha256) == 64


def test_loads_the_folder_above_aclimdb_too(tmp_path):
    make_aclimdb(tmp_path, per_class=3)
    assert len(imdb.load(tmp_path).test) == 6


def test_labels_follow_the_folder(tmp_path):
    tree = make_aclimdb(tmp_path, per_class=2)
    (tree / "train" / "pos" / "99_10.txt").write_text("A marker review", encoding="utf-8")
    loaded = imdb.load(tree)
    index = loaded.train.texts.index("A marker review")
    assert loaded.train.labels[index] == 1


def test_path_comes_from_environment(tmp_path, monkeypatch):
    archive = make_archive(tmp_path, per_class=2)
    monkeypatch.setenv(imdb.ENV_VAR, str(archive))
    assert len(imdb.load().train) == 4


def test_no_path_at_all(monkeypatch):
    monkeypatch.delenv(imdb.ENV_VAR, raising=False)
    with pytest.raises(imdb.DataError, match="--data"):
        imdb.load()


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(imdb.DataError, match=f"{missing}: no such file"):
        imdb.load(missing)


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gzip.compress(b"this is not a tar archive")[:20])
    with pytest.raises(imdb.DataError, match="not a readable .tar.gz"):
        imdb.load(bad)


def test_wrong_layout(tmp_path):
    (tmp_path / "reviews").mkdir()
    (tmp_path / "reviews" / "1.txt").write_text("hello")
    with pytest.raises(imdb.DataError, match="expected the aclImdb layout"):
        imdb.load(tmp_path)


def test_split_with_one_label_only(tmp_path):
    tree = make_aclimdb(tmp_path, per_class=2)
    for file in (tree / "test" / "neg").iterdir():
        file.unlink()
    with pytest.raises(imdb.DataError, match="no test reviews of both labels"):
        imdb.load(tree)


def test_cli_reports_bad_data_in_one_line(tmp_path):
    missing = tmp_path / "absent"
    result = subprocess.run(
        [sys.executable, "-m", "training.train", "--data", str(missing), "--preset", "tiny"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "sentiment-train" in line]
    assert error_lines == [
        f"sentiment-train: error: {missing}: no such file or directory (expected {imdb.EXPECTED})"
    ]
