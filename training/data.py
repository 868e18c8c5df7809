"""Reads the IMDB reviews (aclImdb layout) from a directory or straight from a .tar.gz."""

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


def _directory_sha256(path: Path) -> str:
    """A digest of every review file's path and bytes, in sorted order."""
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    digest = hashlib.sha256()
    for file in sorted(root.glob("*/*/*.txt")):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
