"""Evaluates a model version on all test reviews, beside a TF-IDF + logistic regression baseline.

sentiment-eval --data ../shared/data/aclImdb.tar.gz            # newest shipped version
sentiment-eval --model-dir models/imdb-lstm --version 1 --out /tmp/report
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn import metrics as skm

from imdb_sentiment_client.progress import Progress

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

from training import data as imdb
from training.batches import sorted_batches

MODELS_ROOT = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODEL_DIR = MODELS_ROOT / "imdb-lstm"
DEFAULT_SEED_MODEL_DIR = MODELS_ROOT / "imdb-lstm-seed"


class ModelLoadError(Exception):
    """A model directory or file that cannot be loaded as a sentiment model."""


@dataclass
class EvalResult:
    metrics: dict
    labels: np.ndarray
    scores: np.ndarray
    baseline: dict
    history: dict | None = None
    seed_measured: dict | None = None
    seconds: dict = field(default_factory=dict)
    comparison: list | None = None  # compare.Column per model, on every evaluation set


def score_texts(
    model,
    texts: list[str],
    batch_size: int = 256,
    on_scored: Callable[[int], None] | None = None,
) -> np.ndarray:
    """P(positive) for each text, batched in length order to spare padding; `on_scored(n)`
    after each batch of n."""
    import tensorflow as tf

    batches, _ = sorted_batches(texts, batch_size)
    scores = np.empty(len(texts), dtype=np.float32)
    for batch in batches:
        inputs = tf.constant([texts[i] for i in batch])
        scores[batch] = np.asarray(model(inputs, training=False)).reshape(-1)
        if on_scored is not None:
            on_scored(len(batch))
    return scores


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(scores) >= threshold).astype(int)
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, scores)) if len(set(labels)) > 1 else None,
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "threshold": threshold,
        "examples": int(len(labels)),
    }


def tfidf_classifier() -> Pipeline:
    """TF-IDF (uni+bigram) features into logistic regression: the baseline, unfitted."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def clean(text: str) -> str:
        return re.sub(r"<br\s*/?>", " ", text)

    vectorizer = TfidfVectorizer(
        ngram_range=(1, 2), min_df=2, max_df=0.95, sublinear_tf=True, preprocessor=clean
    )
    return make_pipeline(vectorizer, LogisticRegression(C=4.0, max_iter=1000))


def tfidf_baseline(train: imdb.Split, test: imdb.Split) -> dict:
    """TF-IDF (uni+bigram) + logistic regression, trained on train, scored on test."""
    classifier = tfidf_classifier().fit(train.texts, train.labels)
    scores = classifier.predict_proba(test.texts)[:, 1]
    return classification_metrics(test.labels, scores, 0.5)


def evaluate_model(
    model, dataset: imdb.Dataset, threshold: float = 0.5, history: dict | None = None
) -> EvalResult:
    # Minutes of silence otherwise: progress on stderr, when it is a terminal.
    started = time.monotonic()
    with Progress("scoring test reviews", total=len(dataset.test.texts)) as progress:
        scores = score_texts(model, dataset.test.texts, on_scored=progress.advance)
    model_seconds = time.monotonic() - started
    started = time.monotonic()
    with Progress("fitting the TF-IDF baseline"):
        baseline = tfidf_baseline(dataset.train, dataset.test)
    return EvalResult(
        metrics=classification_metrics(dataset.test.labels, scores, threshold),
        labels=dataset.test.labels,
        scores=scores,
        baseline=baseline,
        history=history,
        seed_measured=_seed_measured(DEFAULT_SEED_MODEL_DIR),
        seconds={
            "model": round(model_seconds, 1),
            "baseline": round(time.monotonic() - started, 1),
        },
    )


def _seed_measured(seed_dir: Path) -> dict | None:
    """Test metrics of the newest seed-preset model trained here, if one is shipped."""
    try:
        version_dir = latest_version_dir(seed_dir)
        return json.loads((version_dir / "metadata.json").read_text())["metrics"]["test"]
    except (ModelLoadError, OSError, KeyError, ValueError):
        return None


def latest_version_dir(model_dir: Path) -> Path:
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: no such model directory")
    versions = [
        p for p in model_dir.iterdir() if p.name.isdigit() and (p / "metadata.json").is_file()
    ]
    if not versions:
        raise ModelLoadError(f"{model_dir}: no complete version folders (<int>/metadata.json)")
    return max(versions, key=lambda p: int(p.name))


def load_model(path: Path):
    """Loads a .keras model in safe mode, with a clear error for anything else."""
    import keras

    import training.layers  # noqa: F401  (registers the model's custom objects)

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for bad files; one message for all
        raise ModelLoadError(f"{path}: not a loadable Keras model ({type(e).__name__}: {e})") from e


def _extra_data(path, metadata: dict, dataset: imdb.Dataset):
    """The extra sets when given (or in the environment), or when the model trained on them."""
    import os

    from training import extra_data

    mixed = metadata.get("hyperparameters", {}).get("data_mix", "imdb") != "imdb"
    if path is None and not os.environ.get(extra_data.ENV_VAR) and not mixed:
        return None
    return extra_data.load(path, dataset.train.texts)


def write_report(result: EvalResult, out: Path, metadata: dict) -> None:
    from training import report

    report.write(result, out, metadata)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sentiment-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help=f"aclImdb directory or .tar.gz (default: ${imdb.ENV_VAR})")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--version", type=int, help="default: the highest complete version")
    parser.add_argument("--out", type=Path, help="default: <version dir>/report")
    parser.add_argument(
        "--extra-data",
        help="folder of sst2/, cad/, contrast/: adds the every-set comparison (needed for "
        "models trained on a mix; default: $SENTIMENT_EXTRA_DATA)",
    )
    args = parser.parse_args(argv)
    try:
        version_dir = (
            args.model_dir / str(args.version)
            if args.version
            else latest_version_dir(args.model_dir)
        )
        metadata = json.loads((version_dir / "metadata.json").read_text())
        model = load_model(version_dir / "model.keras")
        dataset = imdb.load(args.data)
        extra = _extra_data(args.extra_data, metadata, dataset)
    except (ModelLoadError, imdb.DataError, OSError, ValueError) as e:
        print(f"sentiment-eval: error: {e}", file=sys.stderr)
        return 2
    history_file = version_dir / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else None
    result = evaluate_model(model, dataset, metadata.get("decision_threshold", 0.5), history)
    if extra is not None:
        from training import compare

        result.comparison = compare.compare(
            model, metadata, version_dir, dataset, extra, test_scores=result.scores
        )
    out = args.out or version_dir / "report"
    write_report(result, out, metadata)
    print(json.dumps({"model": result.metrics, "tfidf_logreg": result.baseline}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
