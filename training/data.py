"""Reads the IMDB reviews (aclImdb layout) from a directory or straight from a .tar.gz: the
labelled train and test splits, and the unlabelled reviews (`train/unsup`) apart."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "IMDB_DATA"
SPLITS = ("train", "test")
LABELS = {"neg": 0, "pos": 1}
# aclImdb/<split>/<neg|pos>/<id>_<rating>.txt, optionally below leading folders.
_REVIEW_PATH = re.compile(r"(?:^|/)aclImdb/(train|test)/(neg|pos)/(\d+)_\d+\.txt$")
_FILE_NAME = re.compile(r"^(\d+)_\d+\.txt$")
EXPECTED = "the aclImdb layout: aclImdb/{train,test}/{neg,pos}/*.txt"
UNLABELLED_ENV_VAR = "IMDB_UNLABELLED_DATA"
# aclImdb/train/unsup/<id>_0.txt: the official archive's unlabelled reviews (rating 0).
_UNLABELLED_DIR = re.compile(r"(?:^|/)aclImdb/train/unsup/([^/]+)$")
_UNLABELLED_NAME = re.compile(r"^(\d+)_0\.txt$")
UNLABELLED_EXPECTED = "the aclImdb layout: aclImdb/train/unsup/<id>_0.txt"


class DataError(Exception):
    """The data path is missing, unreadable or not laid out as aclImdb."""


@dataclass(frozen=True)
class Split:
    """One split of the data set: review texts, 0/1 labels (1 = positive) and file ids.

    `ids` are the `<id>` of `<id>_<rating>.txt`. Within a label folder, reviews
    of the same movie have consecutive ids.
    """

    texts: list[str]
    labels: np.ndarray
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    source: Path
    sha256: str


def resolve_path(path: str | os.PathLike | None) -> Path:
    """The data path from the argument, else from $IMDB_DATA."""
    if path is None:
        path = os.environ.get(ENV_VAR)
    if not path:
        raise DataError(f"no data path: pass --data PATH or set {ENV_VAR} (expected {EXPECTED})")
    return Path(path)


def load(path: str | os.PathLike | None = None) -> Dataset:
    """Loads both splits from an aclImdb directory or a .tar.gz of one."""
    path = resolve_path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory (expected {EXPECTED})")
    if path.is_dir():
        reviews = _read_directory(path)
        digest = _directory_sha256(path)
    else:
        reviews = _read_archive(path)
        digest = file_sha256(path)
    splits = {}
    for split in SPLITS:
        items = sorted(reviews[split])  # (label, id): stable, whatever the archive's order
        if not items or len({label for label, _, _ in items}) < 2:
            raise DataError(
                f"{path}: no {split} reviews of both labels found (expected {EXPECTED})"
            )
        splits[split] = Split(
            texts=[text for _, _, text in items],
            labels=np.array([label for label, _, _ in items], dtype=np.int32),
            ids=np.array([review_id for _, review_id, _ in items], dtype=np.int64),
        )
    return Dataset(train=splits["train"], test=splits["test"], source=path, sha256=digest)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _empty() -> dict[str, list[tuple[int, int, str]]]:
    return {split: [] for split in SPLITS}


def _read_archive(path: Path) -> dict[str, list[tuple[int, int, str]]]:
    reviews = _empty()
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                match = _REVIEW_PATH.search(member.name)
                if not member.isfile() or not match:
                    continue
                split, label, review_id = match.groups()
                raw = archive.extractfile(member).read()
                text = _decode(raw, member.name)
                reviews[split].append((LABELS[label], int(review_id), text))
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as e:
        raise DataError(f"{path}: not a readable .tar.gz archive ({e}); expected {EXPECTED}") from e
    return reviews


def _read_directory(path: Path) -> dict[str, list[tuple[int, int, str]]]:
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    reviews = _empty()
    for split in SPLITS:
        for label, value in LABELS.items():
            folder = root / split / label
            if not folder.is_dir():
                continue
            for file in folder.glob("*.txt"):
                match = _FILE_NAME.match(file.name)
                if match:
                    text = _decode(file.read_bytes(), file)
                    reviews[split].append((value, int(match.group(1)), text))
    return reviews


def _decode(raw: bytes, where) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text ({e})") from e


def _directory_sha256(path: Path, pattern: str = "*/*/*.txt") -> str:
    """A digest of every review file's path and bytes, in sorted order."""
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    digest = hashlib.sha256()
    for file in sorted(root.glob(pattern)):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Unlabelled:
    """Reviews with no label (`train/unsup`), in id order, less any that repeat a test review."""

    texts: list[str]
    ids: np.ndarray
    source: Path
    sha256: str
    dropped_test_reviews: int  # texts equal to an IMDB test review, left out

    def __len__(self) -> int:
        return len(self.texts)


def comparable(text: str) -> str:
    """A review as the data's README compares texts: lowercased, letters and digits only
    (the unlabelled copy lost its HTML breaks, so `<br />` must not count)."""
    text = re.sub(r"<br\s*/?>", "", text.lower())
    return re.sub(r"[^0-9a-z]", "", text)


def load_unlabelled(
    path: str | os.PathLike | None = None, test_texts: list[str] = ()
) -> Unlabelled:
    """The unlabelled reviews from a .tar.gz or directory holding aclImdb/train/unsup (the
    archive of that part alone, or the full official archive). A review whose text equals
    one of `test_texts` is dropped: nothing of the test split may reach training."""
    if path is None:
        path = os.environ.get(UNLABELLED_ENV_VAR)
    if not path:
        raise DataError(
            f"no unlabelled data path: pass --unlabelled-data PATH or set "
            f"{UNLABELLED_ENV_VAR} (expected {UNLABELLED_EXPECTED})"
        )
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory (expected {UNLABELLED_EXPECTED})")
    if path.is_dir():
        reviews = _read_unlabelled_directory(path)
        digest = _directory_sha256(path, "train/unsup/*.txt")
    else:
        reviews = _read_unlabelled_archive(path)
        digest = file_sha256(path)
    if not reviews:
        raise DataError(f"{path}: no unlabelled reviews found (expected {UNLABELLED_EXPECTED})")
    held_out = {comparable(t) for t in test_texts}
    kept = [(i, t) for i, t in sorted(reviews) if comparable(t) not in held_out]
    return Unlabelled(
        texts=[t for _, t in kept],
        ids=np.array([i for i, _ in kept], dtype=np.int64),
        source=path,
        sha256=digest,
        dropped_test_reviews=len(reviews) - len(kept),
    )


def _unlabelled_review(name: str, raw: bytes, where) -> tuple[int, str]:
    match = _UNLABELLED_NAME.match(name)
    if not match:
        raise DataError(f"{where}: not an unlabelled review's name (expected <id>_0.txt)")
    text = _decode(raw, where)
    if not text.strip():
        raise DataError(f"{where}: an empty review")
    return int(match.group(1)), text


def _read_unlabelled_archive(path: Path) -> list[tuple[int, str]]:
    reviews = []
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                match = _UNLABELLED_DIR.search(member.name)
                if not member.isfile() or not match:
                    continue
                raw = archive.extractfile(member).read()
                reviews.append(_unlabelled_review(match.group(1), raw, f"{path}:{member.name}"))
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as e:
        raise DataError(
            f"{path}: not a readable .tar.gz archive ({e}); expected {UNLABELLED_EXPECTED}"
        ) from e
    return reviews


def _read_unlabelled_directory(path: Path) -> list[tuple[int, str]]:
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    folder = root / "train" / "unsup"
    if not folder.is_dir():
        folder = root / "unsup" if (root / "unsup").is_dir() else root
    return [
        _unlabelled_review(file.name, file.read_bytes(), file)
        for file in sorted(folder.iterdir())
        if file.is_file() and file.suffix == ".txt"
    ]
