"""A new version made from a trained one: what sentiment-fit-bag and sentiment-finetune share.

Both read a base version (its model, preset and metadata; its LSTM alone, a fitted bag set aside),
rebuild its training mix from its metadata and check it is the same data, then write the next
version beside it with its figures on the validation sets and, unless --no-report, on the
test set (scored once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import keras

from training import data as imdb
from training import evaluate, extra_data
from training.metrics import classification_metrics, score_texts
from training.mix import IMDB_VALIDATION, SoftLabelled, TrainingMix, build_mix
from training.model import Preset, lstm_path, trainable_parameters
from training.splits import split_train_validation
from training.train import HISTORY_FILE, METADATA_FILE, MODEL_FILE, next_version, write_version
from training.versions import ModelLoadError, load_model

# What reading a base, its data or its teacher's scores can raise: one error line, exit 2.
LOAD_ERRORS = (OSError, KeyError, TypeError, ValueError, ModelLoadError, imdb.DataError)


@dataclass(frozen=True)
class Base:
    path: Path
    metadata: dict
    model: keras.Model
    preset: Preset

    @property
    def seed(self) -> int:
        return self.metadata["training"]["seed"]

    @property
    def preset_name(self) -> str:
        """The preset that made the base's LSTM (a fitted bag's "-bag" taken off)."""
        name = self.metadata["preset"]
        if self.metadata["hyperparameters"].get("fitted_bag_buckets"):
            return name.removesuffix("-bag")
        return name


def add_base_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base", type=Path, required=True, help="a version folder, e.g. models/imdb-lstm/5"
    )
    parser.add_argument("--data", help=f"aclImdb directory or .tar.gz (default: ${imdb.ENV_VAR})")
    parser.add_argument(
        "--extra-data", help=f"folder of sst2/, cad/, contrast/ (default: ${extra_data.ENV_VAR})"
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, help="model base directory (default: the base's parent)"
    )
    parser.add_argument("--version", type=int, help="version number (default: highest + 1)")
    parser.add_argument("--no-report", action="store_true", help="skip the test-set report")


def load_base(path: Path) -> Base:
    """The trained version at `path`, its LSTM alone: a bag fitted beside it afterwards is set
    aside (the LSTM path is exactly as trained); ModelLoadError for a bag trained with it."""
    metadata = json.loads((path / METADATA_FILE).read_text())
    model = load_model(path / MODEL_FILE)
    preset = Preset(**metadata["hyperparameters"])
    if preset.fitted_bag_buckets:
        model, preset = lstm_path(model), dataclasses.replace(preset, fitted_bag_buckets=0)
    elif preset.bag_buckets or lstm_path(model) is not None:
        raise ModelLoadError(f"{path}: its bag trained with its LSTM: no LSTM to start from alone")
    return Base(path, metadata, model, preset)


def rebuild_mix(
    base: Base,
    dataset: imdb.Dataset,
    extra: extra_data.ExtraData,
    unlabelled: SoftLabelled | None = None,
) -> TrainingMix:
    """The base's training mix and validation sets, from its seed and preset; a DataError if
    `dataset` is not the data it trained on."""
    keras.utils.set_random_seed(base.seed)
    train, validation = split_train_validation(
        dataset.train, base.preset.validation_fraction, base.seed
    )
    mix = build_mix(base.preset, train, validation, dataset.test, extra, unlabelled)
    trained_on = base.metadata["data"]["train_reviews"]
    if len(mix.imdb_train) != trained_on:
        raise imdb.DataError(
            f"{len(mix.imdb_train):,} IMDB training reviews, the base trained on "
            f"{trained_on:,}: not the same data"
        )
    return mix


def write_next_version(
    args: argparse.Namespace,
    base: Base,
    dataset: imdb.Dataset,
    mix: TrainingMix,
    model: keras.Model,
    *,
    preset_name: str,
    hyperparameters: dict,
    record: dict,
) -> Path:
    """Writes `model` as the next version (or --version) under --out or the base's parent: the
    base's metadata with `preset_name`, `hyperparameters` over the base's, `record` added, and
    the model's own validation (and, unless --no-report, test) figures."""
    out = args.out or base.path.parent
    out.mkdir(parents=True, exist_ok=True)
    version = args.version or next_version(out)
    threshold = base.metadata["decision_threshold"]
    validation_sets = {
        name: classification_metrics(s.split.labels, score_texts(model, s.split.texts), threshold)
        for name, s in mix.validation_sets.items()
    }
    metadata = {
        **base.metadata,
        "version": version,
        "preset": preset_name,
        "base_version": base.metadata["version"],
        "base_preset": base.metadata["preset"],
        **record,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    metadata["hyperparameters"] = {
        **base.metadata["hyperparameters"],
        "name": preset_name,
        **hyperparameters,
    }
    metadata["trainable_parameters"] = trainable_parameters(model)
    metadata["metrics"] = {
        "validation": validation_sets[IMDB_VALIDATION],
        "validation_sets": validation_sets,
    }
    history = json.loads((base.path / HISTORY_FILE).read_text())
    result = None
    if not args.no_report:
        result = evaluate.evaluate_model(model, dataset, threshold, history=history)
        metadata["metrics"]["test"] = result.metrics
    return write_version(out / str(version), model, history, metadata, result)
