"""Soft labels for the unlabelled reviews, from a teacher that read labelled training text only.

    sentiment-teach --data ../shared/data/aclImdb.tar.gz \
        --unlabelled-data ../shared/data/aclImdb-unsup.tar.gz
    make teacher                    # the same, through the Makefile

The 49,731 unlabelled IMDB reviews carry no label. A teacher fitted on the IMDB
training portion (never the validation split, never a test review) gives each of
them its probability of positive; the LSTM then trains on them against those
probabilities (knowledge distillation, Hinton et al. 2015), learning the teacher's
judgement on text it has no label for. The teacher is a naive-Bayes-weighted
uni+bi+trigram logistic regression (Wang and Manning 2012's NBSVM, with a logistic
loss), averaged with a shipped LSTM version when one is named: the two err on
different reviews. The scores are written once, with what made them, to
`models/teacher/`; `sentiment-train` reads them from there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from training import data as imdb
from training import extra_data
from training.extra_data import ExtraData, normalise_space
from training.metrics import classification_metrics
from training.splits import split_train_validation

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "teacher"
SCORES_FILE = "unlabelled-scores.npz"
METADATA_FILE = "metadata.json"
VALIDATION_FRACTION = 0.2  # the classifier presets' own: the teacher never sees their validation


def _clean(text: str) -> str:
    return re.sub(r"<br\s*/?>", " ", text.lower())


class NgramTeacher(BaseEstimator, ClassifierMixin):
    """Binary uni+bi+trigram presence, each feature scaled by its naive-Bayes log-count
    ratio, into an L2 logistic regression: NBSVM's features with a probabilistic output."""

    def __init__(self, c: float = 1.0, min_df: int = 2):
        self.c = c
        self.min_df = min_df

    def fit(self, texts: list[str], labels: np.ndarray) -> NgramTeacher:
        labels = np.asarray(labels)
        self.vectorizer_ = CountVectorizer(
            ngram_range=(1, 3),
            min_df=self.min_df,
            binary=True,
            preprocessor=_clean,
            token_pattern=r"(?u)\b\w+\b|[!?]",
            dtype=np.float32,
        )
        x = self.vectorizer_.fit_transform(texts)
        positive = np.asarray(x[labels == 1].sum(axis=0)).ravel() + 1.0
        negative = np.asarray(x[labels == 0].sum(axis=0)).ravel() + 1.0
        ratio = np.log((positive / positive.sum()) / (negative / negative.sum()))
        self.ratio_ = sparse.diags(ratio.astype(np.float32))
        self.classes_ = np.array([0, 1])
        self.regression_ = LogisticRegression(C=self.c, max_iter=3000)
        self.regression_.fit(x @ self.ratio_, labels)
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.regression_.predict_proba(self.vectorizer_.transform(texts) @ self.ratio_)


def lstm_scores(version_dir: Path, texts: list[str]) -> np.ndarray:
    from training.metrics import score_texts
    from training.versions import load_model

    return score_texts(load_model(version_dir / "model.keras"), texts)


def teach(
    dataset: imdb.Dataset,
    unlabelled: imdb.Unlabelled,
    *,
    seed: int = 1337,
    extra: ExtraData | None = None,
    lstm_version: Path | None = None,
    log=print,
) -> tuple[np.ndarray, dict]:
    """(the teacher's P(positive) for each unlabelled review, a record of how it was made and
    what it scores on the IMDB validation split). With `extra`, the IMDB training reviews
    that are dev-set originals (CAD, contrast sets) are left out: dev labels never teach."""
    from training.mix import without

    train, validation = split_train_validation(dataset.train, VALIDATION_FRACTION, seed)
    if extra is not None:
        dev = {normalise_space(t) for s in extra.validation_sets().values() for t in s.split.texts}
        train, _ = without(train, dev)
        validation, _ = without(validation, dev)
    started = time.monotonic()
    teacher = NgramTeacher().fit(train.texts, train.labels)
    parts = {"n-gram": teacher.predict_proba(validation.texts)[:, 1]}
    scores = teacher.predict_proba(unlabelled.texts)[:, 1]
    log(f"n-gram teacher fitted on {len(train):,} reviews in {time.monotonic() - started:.0f} s")
    if lstm_version is not None:
        # Its own validation split must be this one, or the average would be scored on
        # reviews the LSTM trained on.
        metadata = json.loads((lstm_version / "metadata.json").read_text())
        if metadata.get("training", {}).get("seed") != seed:
            raise ValueError(f"{lstm_version} was trained with another seed than {seed}")
        parts["LSTM"] = lstm_scores(lstm_version, validation.texts)
        parts["average"] = (parts["n-gram"] + parts["LSTM"]) / 2
        scores = (scores + lstm_scores(lstm_version, unlabelled.texts)) / 2
    record = {
        "teacher": "NB-weighted 1-3gram logistic regression"
        + (
            f" averaged with {lstm_version.parent.name}/{lstm_version.name}" if lstm_version else ""
        ),
        "fitted_on": f"IMDB train less its validation split (seed {seed})"
        + (" and the dev sets' originals" if extra is not None else "")
        + f": {len(train):,} reviews",
        "validation": {
            name: classification_metrics(validation.labels, part, 0.5)
            for name, part in parts.items()
        },
        "unlabelled": {
            "source": unlabelled.source.name,
            "sha256": unlabelled.sha256,
            "reviews": len(unlabelled),
            "dropped_test_reviews": unlabelled.dropped_test_reviews,
        },
        "seed": seed,
        "seconds": round(time.monotonic() - started, 1),
    }
    for name, metrics in record["validation"].items():
        log(
            f"teacher {name} on IMDB validation: accuracy {metrics['accuracy']:.4f}, "
            f"AUC {metrics['roc_auc']:.4f}"
        )
    return scores.astype(np.float32), record


def write(out: Path, unlabelled: imdb.Unlabelled, scores: np.ndarray, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / SCORES_FILE, ids=unlabelled.ids, scores=scores)
    (out / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read(folder: Path, unlabelled: imdb.Unlabelled, seed: int) -> tuple[np.ndarray, dict]:
    """The written scores, in `unlabelled`'s order; a DataError if they were made from other
    reviews or for another validation split."""
    try:
        record = json.loads((folder / METADATA_FILE).read_text())
        with np.load(folder / SCORES_FILE, allow_pickle=False) as saved:
            by_id = dict(zip(saved["ids"].tolist(), saved["scores"].tolist(), strict=True))
    except (OSError, ValueError, KeyError) as e:
        raise imdb.DataError(f"{folder}: no readable teacher scores ({e}); run make teacher") from e
    if record.get("seed") != seed:
        raise imdb.DataError(
            f"{folder}: teacher scores made for seed {record.get('seed')}, not {seed} "
            "(its validation split would differ); run make teacher"
        )
    missing = [i for i in unlabelled.ids.tolist() if i not in by_id]
    if missing:
        raise imdb.DataError(
            f"{folder}: no teacher score for {len(missing):,} unlabelled reviews "
            f"(first id {missing[0]}); run make teacher"
        )
    return np.array([by_id[i] for i in unlabelled.ids.tolist()], dtype=np.float32), record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sentiment-teach", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help=f"labelled aclImdb (default: ${imdb.ENV_VAR})")
    parser.add_argument(
        "--unlabelled-data", help=f"aclImdb with train/unsup (default: ${imdb.UNLABELLED_ENV_VAR})"
    )
    parser.add_argument(
        "--extra-data", help="folder of sst2/, cad/, contrast/: their dev texts are left out"
    )
    parser.add_argument("--lstm-version", type=Path, help="a model version folder to average with")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    try:
        dataset = imdb.load(args.data)
        unlabelled = imdb.load_unlabelled(args.unlabelled_data, dataset.test.texts)
        extra = extra_data.load(args.extra_data, dataset.train.texts) if args.extra_data else None
        scores, record = teach(
            dataset, unlabelled, seed=args.seed, extra=extra, lstm_version=args.lstm_version
        )
    except (imdb.DataError, ValueError) as e:
        print(f"sentiment-teach: error: {e}", file=sys.stderr)
        return 2
    write(args.out, unlabelled, scores, record)
    print(f"wrote {args.out / SCORES_FILE}: {len(scores):,} scores", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
