"""Adds a fitted bag (training/fitted_bag.py) beside a trained version's LSTM: a new version.

    sentiment-fit-bag --base models/imdb-lstm/5 --data ../shared/data/aclImdb.tar.gz \
        --extra-data ../shared/data/extra

The base's training mix is rebuilt from its metadata (seed, preset, data); the bag is
fitted on its labelled texts and weighed on its validation sets, then the whole model is
scored on the test set once (skip with --no-report) and written as the next version.
Nothing is written if the LSTM alone scores at least as well on validation.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import keras

from training import data as imdb
from training import evaluate, extra_data
from training.fitted_bag import attach
from training.metrics import classification_metrics, score_texts
from training.mix import IMDB_VALIDATION, build_mix, choose_whole_or_lstm
from training.model import Preset, lstm_path, trainable_parameters
from training.splits import split_train_validation
from training.train import HISTORY_FILE, METADATA_FILE, MODEL_FILE, next_version, write_version
from training.versions import ModelLoadError, load_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sentiment-fit-bag", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", type=Path, required=True, help="a version folder, e.g. models/imdb-lstm/5"
    )
    parser.add_argument("--data", help=f"aclImdb directory or .tar.gz (default: ${imdb.ENV_VAR})")
    parser.add_argument(
        "--extra-data", help=f"folder of sst2/, cad/, contrast/ (default: ${extra_data.ENV_VAR})"
    )
    parser.add_argument("--buckets", type=int, default=1 << 20, help="hash buckets of word pairs")
    parser.add_argument(
        "--out", type=Path, help="model base directory (default: the base's parent)"
    )
    parser.add_argument("--version", type=int, help="version number (default: highest + 1)")
    parser.add_argument("--no-report", action="store_true", help="skip the test-set report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metadata = json.loads((args.base / METADATA_FILE).read_text())
        model = load_model(args.base / MODEL_FILE)
        preset = Preset(**metadata["hyperparameters"])
        if preset.bag_buckets or preset.fitted_bag_buckets or lstm_path(model) is not None:
            raise ModelLoadError(f"{args.base}: already has a bag beside its LSTM")
        dataset = imdb.load(args.data)
        extra = extra_data.load(args.extra_data, dataset.train.texts)
    except (OSError, KeyError, TypeError, ValueError, ModelLoadError, imdb.DataError) as e:
        print(f"sentiment-fit-bag: error: {e}", file=sys.stderr)
        return 2
    seed = metadata["training"]["seed"]
    keras.utils.set_random_seed(seed)
    train, validation = split_train_validation(dataset.train, preset.validation_fraction, seed)
    mix = build_mix(preset, train, validation, dataset.test, extra)  # labelled texts only
    if len(mix.imdb_train) != metadata["data"]["train_reviews"]:
        print(
            f"sentiment-fit-bag: error: {len(mix.imdb_train):,} IMDB training reviews, the base "
            f"trained on {metadata['data']['train_reviews']:,}: not the same data",
            file=sys.stderr,
        )
        return 2
    print(mix.describe(), flush=True)
    whole, record = attach(model, preset, mix.texts, mix.labels, mix.validation_sets, args.buckets)
    shipped, selection = choose_whole_or_lstm(whole, mix.validation_sets)
    if shipped is not whole:
        print("sentiment-fit-bag: the LSTM alone scores as well on validation: no new version")
        return 0

    out = args.out or args.base.parent
    version = args.version or next_version(out)
    threshold = metadata["decision_threshold"]
    validation_sets = {
        name: classification_metrics(s.split.labels, score_texts(whole, s.split.texts), threshold)
        for name, s in mix.validation_sets.items()
    }
    metadata.update(
        version=version,
        preset=f"{metadata['preset']}-bag",
        base_version=metadata["version"],
        bag=record,
        selection=selection,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    metadata["hyperparameters"] = {
        **metadata["hyperparameters"],
        "name": metadata["preset"],  # e.g. student-bag: the preset whose make train remakes it
        "fitted_bag_buckets": args.buckets,
    }
    metadata["trainable_parameters"] = trainable_parameters(whole)
    metadata["metrics"] = {
        "validation": validation_sets[IMDB_VALIDATION],
        "validation_sets": validation_sets,
    }
    history = json.loads((args.base / HISTORY_FILE).read_text())
    result = None
    if not args.no_report:
        result = evaluate.evaluate_model(whole, dataset, threshold, history=history)
        metadata["metrics"]["test"] = result.metrics
    write_version(out / str(version), whole, history, metadata, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
