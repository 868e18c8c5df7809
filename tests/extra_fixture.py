"""Builds a small copy of the extra data folder (sst2/, cad/, contrast/) from made-up texts."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from tests.imdb_fixture import NEGATIVE, POSITIVE, make_archive, review
from training import data as imdb


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(row + "\n" for row in rows), encoding="utf-8")


def _sentiment(positive: bool) -> str:
    return "Positive" if positive else "Negative"


def flip(text: str) -> str:
    """A minimal edit that flips a made-up review's label: swap every cue word."""
    swap = dict(zip(POSITIVE, NEGATIVE, strict=True)) | dict(zip(NEGATIVE, POSITIVE, strict=True))
    return " ".join(swap.get(w.lower().strip(".!"), w) for w in text.split())


def make_extra(root: Path, imdb_train: list[tuple[str, int]], seed: int = 0) -> Path:
    """Writes root/extra/...; CAD and contrast originals are taken from `imdb_train`
    ((text, label) pairs), as in the real data. Returns root/extra."""
    rng = random.Random(seed)
    extra = root / "extra"
    sst = []
    for _ in range(200):
        positive = rng.random() < 0.5
        sst.append(f"{int(positive)}\t{review(rng, positive).lower()}")
    sst.append("1\t( )")  # no word left after standardisation: dropped and counted
    _write(extra / "sst2" / "train.tsv", "label\tsentence", sst)
    _write(extra / "sst2" / "dev.tsv", "label\tsentence", sst[:40])

    def pairs(items, first_id):
        rows = []
        for batch_id, (text, label) in enumerate(items, start=first_id):
            rows.append(f"{_sentiment(label == 1)}\t{text}\t{batch_id}")
            rows.append(f"{_sentiment(label != 1)}\t{flip(text)}\t{batch_id}")
        return rows

    header = "Sentiment\tText\tbatch_id"
    _write(extra / "cad" / "train_paired.tsv", header, pairs(imdb_train[:30], 0))
    _write(extra / "cad" / "dev_paired.tsv", header, pairs(imdb_train[30:40], 1000))
    originals = imdb_train[40:50]
    _write(
        extra / "contrast" / "dev_original.tsv",
        "Sentiment\tText",
        [f"{_sentiment(label == 1)}\t{text}" for text, label in originals],
    )
    _write(
        extra / "contrast" / "dev_contrast.tsv",
        "Sentiment\tText",
        [f"{_sentiment(label != 1)}\t{flip(text)}" for text, label in originals],
    )
    return extra


def make_labelled_data(root: Path, per_class: int = 150):
    """(archive, its loaded dataset, an extra data folder made from its training reviews)."""
    archive = make_archive(root, per_class=per_class)
    dataset = imdb.load(archive)
    pairs = list(zip(dataset.train.texts, dataset.train.labels.tolist(), strict=True))
    pairs = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    return archive, dataset, make_extra(root, pairs)
