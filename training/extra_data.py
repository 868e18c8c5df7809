"""Reads the extra sentiment data: SST-2 sentences, counterfactual IMDB pairs, contrast sets.

    ../shared/data/extra/sst2/{train,dev}.tsv          label, sentence
    ../shared/data/extra/cad/{train,dev}_paired.tsv    Sentiment, Text, batch_id
    ../shared/data/extra/contrast/dev_{original,contrast}.tsv   Sentiment, Text

Every `dev` file is validation data: it selects models and is reported, never
trained on. A missing or malformed file is one DataError naming it; rows with
no word left after standardisation are dropped and counted (fed in, a fully
masked row turns the training loss into NaN).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import DataError, Split

ENV_VAR = "SENTIMENT_EXTRA_DATA"
SENTIMENTS = {"Negative": 0, "Positive": 1}
# Python's twin of the model's standardisers, to tell which rows keep a word. RE2
# (TensorFlow's regex engine) has ASCII \w, hence re.ASCII.
_NO_WORD = re.compile(r"^[^a-zA-Z0-9_]*$")
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass(frozen=True)
class Labelled:
    """Texts with 0/1 labels from one file; `pairs` ties a CAD row to its counterpart."""

    name: str
    split: Split
    dropped_wordless: int = 0
    pairs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.split)


@dataclass(frozen=True)
class ExtraData:
    sst2_train: Labelled
    sst2_dev: Labelled
    cad_train: Labelled
    cad_dev_original: Labelled
    cad_dev_revised: Labelled
    contrast_original: Labelled
    contrast_edited: Labelled
    root: Path

    def validation_sets(self) -> dict[str, Labelled]:
        """The sets models are selected on and reported against, by name."""
        return {
            s.name: s
            for s in (
                self.sst2_dev,
                self.cad_dev_original,
                self.cad_dev_revised,
                self.contrast_original,
                self.contrast_edited,
            )
        }


def resolve_root(path: str | os.PathLike | None) -> Path:
    if path is None:
        path = os.environ.get(ENV_VAR)
    if not path:
        raise DataError(f"no extra data path: pass --extra-data PATH or set {ENV_VAR}")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected sst2/, cad/ and contrast/ in it)")
    return root


def has_words(text: str) -> bool:
    return not _NO_WORD.match(_HTML_BREAK.sub(" ", text))


def normalise_space(text: str) -> str:
    return " ".join(text.split())


def read_tsv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header naming at least `columns`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"{path}: header {reader.fieldnames} lacks column(s) {', '.join(missing)}"
                )
            rows = list(reader)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    except csv.Error as e:
        raise DataError(f"{path}: not a tab-separated file ({e})") from e
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def _label(value: str | None, mapping: dict[str, int], path: Path, line: int) -> int:
    if value not in mapping:
        raise DataError(f"{path}, line {line}: label {value!r} is not one of {sorted(mapping)}")
    return mapping[value]


def _labelled(name, path, rows, text_key, label_key, mapping, pair_key=None) -> Labelled:
    texts, labels, pairs, dropped = [], [], [], 0
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        text = row.get(text_key)
        if text is None or None in row:
            raise DataError(f"{path}, line {line}: expected {len(row)} tab-separated fields")
        label = _label(row.get(label_key), mapping, path, line)
        if not has_words(text):
            dropped += 1
            continue
        texts.append(text)
        labels.append(label)
        if pair_key:
            try:
                pairs.append(int(row[pair_key]))
            except (TypeError, ValueError):
                raise DataError(
                    f"{path}, line {line}: {pair_key} {row.get(pair_key)!r} is not an integer"
                ) from None
    split = Split(texts, np.array(labels, dtype=np.int32))
    return Labelled(name, split, dropped, np.array(pairs, dtype=np.int64) if pair_key else None)


def load_sst2(path: Path, name: str) -> Labelled:
    rows = read_tsv(path, ("label", "sentence"))
    return _labelled(name, path, rows, "sentence", "label", {"0": 0, "1": 1})


def load_cad(path: Path, name: str) -> Labelled:
    rows = read_tsv(path, ("Sentiment", "Text", "batch_id"))
    return _labelled(name, path, rows, "Text", "Sentiment", SENTIMENTS, "batch_id")


def load_reviews(path: Path, name: str) -> Labelled:
    rows = read_tsv(path, ("Sentiment", "Text"))
    return _labelled(name, path, rows, "Text", "Sentiment", SENTIMENTS)


def split_pairs(cad: Labelled, originals: list[str]) -> tuple[Labelled, Labelled]:
    """CAD dev's rows -> (the original halves, the revised halves), by which text is an
    IMDB review (each pair has one original and its label-flipped edit)."""
    originals = {normalise_space(text) for text in originals}
    is_original = np.array([normalise_space(text) in originals for text in cad.split.texts])
    halves = []
    for suffix, keep in (("original", is_original), ("revised", ~is_original)):
        idx = np.flatnonzero(keep)
        split = Split([cad.split.texts[i] for i in idx], cad.split.labels[idx])
        halves.append(Labelled(f"{cad.name} {suffix}", split, 0, cad.pairs[idx]))
    return halves[0], halves[1]


def load(path: str | os.PathLike | None, imdb_train_texts: list[str]) -> ExtraData:
    """All extra files under `path` (or $SENTIMENT_EXTRA_DATA); `imdb_train_texts` tells
    CAD's original halves from its edits."""
    root = resolve_root(path)
    cad_dev = load_cad(root / "cad" / "dev_paired.tsv", "CAD dev")
    cad_dev_original, cad_dev_revised = split_pairs(cad_dev, imdb_train_texts)
    if len(cad_dev_original) != len(cad_dev_revised):
        raise DataError(
            f"{root / 'cad' / 'dev_paired.tsv'}: {len(cad_dev_original)} rows are IMDB training "
            f"reviews and {len(cad_dev_revised)} are not; expected one of each per pair"
        )
    return ExtraData(
        sst2_train=load_sst2(root / "sst2" / "train.tsv", "SST-2 train"),
        sst2_dev=load_sst2(root / "sst2" / "dev.tsv", "SST-2 dev"),
        cad_train=load_cad(root / "cad" / "train_paired.tsv", "CAD train"),
        cad_dev_original=cad_dev_original,
        cad_dev_revised=cad_dev_revised,
        contrast_original=load_reviews(root / "contrast" / "dev_original.tsv", "contrast original"),
        contrast_edited=load_reviews(root / "contrast" / "dev_contrast.tsv", "contrast edited"),
        root=root,
    )
