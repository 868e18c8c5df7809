"""Evaluates a model version on all test reviews, beside a TF-IDF + logistic regression baseline.

sentiment-eval --data ../shared/data/aclImdb.tar.gz            # newest shipped version
sentiment-eval --model-dir models/imdb-lstm --version 1 --out /tmp/report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imdb_sentiment_client.progress import Progress
from training import data as imdb
from training.baselines import tfidf_baseline
from training.metrics import classification_metrics, score_texts
from training.versions import (
    DEFAULT_MODEL_DIR,
    DEFAULT_SEED_MODEL_DIR,
    ModelLoadError,
    latest_version_dir,
    load_model,
)


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
