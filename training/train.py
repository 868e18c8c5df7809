"""Trains the sentiment LSTM on IMDB and writes a versioned model directory.

    sentiment-train --data ../shared/data/aclImdb.tar.gz --preset default
    make train                      # the same, through the Makefile

Reads top to bottom: configuration, data, model, training loop, save.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training import data as imdb
from training import embeddings, evaluate, extra_data, fitted_bag, pretrain, soft_labels, teacher
from training.batches import length_grouped_batches
from training.metrics import classification_metrics, score_texts
from training.mix import SelectOnValidationSets, SoftLabelled, build_mix, choose_whole_or_lstm
from training.model import (
    PRESETS,
    Preset,
    build_models,
    build_vectorizer,
    get_preset,
    trainable_parameters,
)
from training.splits import id_blocks, limit_split, split_train_validation

MODEL_NAME = "imdb-lstm"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / MODEL_NAME
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
HISTORY_FILE = "history.json"
# Candidate decision thresholds, chosen on validation data only.
THRESHOLDS = np.round(np.arange(0.30, 0.701, 0.01), 2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sentiment-train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help=f"aclImdb directory or .tar.gz (default: ${imdb.ENV_VAR})")
    parser.add_argument(
        "--extra-data",
        help="folder of sst2/, cad/, contrast/ for presets that mix them in "
        f"(default: ${extra_data.ENV_VAR})",
    )
    parser.add_argument(
        "--unlabelled-data",
        help="aclImdb with train/unsup, for presets that learn from unlabelled reviews "
        f"(default: ${imdb.UNLABELLED_ENV_VAR})",
    )
    parser.add_argument(
        "--teacher-scores",
        type=Path,
        default=soft_labels.DEFAULT_OUT,
        help="the teacher's scores of the unlabelled reviews (make teacher)",
    )
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model base directory")
    parser.add_argument("--version", type=int, help="version number (default: highest + 1)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--epochs", type=int, help="override the preset's max epochs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override one preset field, e.g. --set maxlen=800 (repeatable)",
    )
    parser.add_argument("--limit", type=int, help="use only this many train and test reviews")
    parser.add_argument("--checkpoint-dir", type=Path, help="default: <out>/.checkpoints")
    parser.add_argument("--no-report", action="store_true", help="skip the test-set report")
    return parser.parse_args(argv)


def parse_overrides(items: list[str]) -> dict:
    """`["maxlen=800", "bidirectional=false"]` -> typed preset overrides."""
    fields = {f.name: f.type for f in dataclasses.fields(Preset)}
    overrides = {}
    for item in items:
        name, _, raw = item.partition("=")
        if name not in fields or not raw:
            raise ValueError(
                f"bad --set {item!r}: expected FIELD=VALUE, FIELD one of {sorted(fields)}"
            )
        kind = fields[name]
        if kind == "bool":
            overrides[name] = raw.lower() in ("1", "true", "yes")
        else:
            try:
                overrides[name] = {"int": int, "float": float}.get(kind, str)(raw)
            except ValueError:
                raise ValueError(f"bad --set {item!r}: {name} takes a {kind}") from None
    return overrides


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold in THRESHOLDS with the best validation accuracy (ties: nearest 0.5)."""
    accuracy = [np.mean((scores >= t) == labels) for t in THRESHOLDS]
    best = max(accuracy)
    candidates = [t for t, a in zip(THRESHOLDS, accuracy, strict=True) if a == best]
    return float(min(candidates, key=lambda t: abs(t - 0.5)))


def next_version(base: Path) -> int:
    versions = [int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def train(
    dataset: imdb.Dataset,
    preset: Preset,
    out: Path,
    *,
    version: int | None = None,
    seed: int = 1337,
    checkpoint_dir: Path | None = None,
    report: bool = True,
    verbose: int = 2,
    extra: extra_data.ExtraData | None = None,
    unlabelled: SoftLabelled | None = None,
) -> Path:
    """Trains `preset` on `dataset` (and `extra`, if its data mix asks; and `unlabelled`, the
    unlabelled reviews with a teacher's scores, if it learns from them) and returns the new
    version directory."""
    if preset.unlabelled and unlabelled is None:
        raise ValueError(f"preset {preset.name} learns from unlabelled reviews: none given")
    keras.utils.set_random_seed(seed)
    train_split, val_split = split_train_validation(dataset.train, preset.validation_fraction, seed)
    mix = build_mix(
        preset,
        train_split,
        val_split,
        dataset.test,
        extra,
        unlabelled if preset.unlabelled else None,
    )
    train_split, val_split = mix.imdb_train, mix.imdb_validation
    print(
        f"preset {preset.name}: {len(train_split)} train / {len(val_split)} validation reviews, "
        f"{len(dataset.test)} test reviews held out",
        flush=True,
    )
    print(mix.describe(), flush=True)

    out.mkdir(parents=True, exist_ok=True)
    version = version or next_version(out)
    if (out / str(version)).exists():  # fail now, not after hours of training
        raise FileExistsError(f"{out / str(version)} already exists; pass another --version")

    vectorizer = build_vectorizer(preset)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(mix.texts).batch(1024))
    model, trainer = build_models(preset, vectorizer)
    print(f"{trainable_parameters(model):,} trainable parameters", flush=True)
    if preset.pretrained_embeddings:
        started = time.monotonic()
        vectors = embeddings.pretrained_vectors(vectorizer, mix.texts, preset.embedding_dim, seed)
        model.get_layer("classifier").get_layer("embedding").set_weights([vectors])
        print(f"PPMI-SVD embeddings in {time.monotonic() - started:.0f} s", flush=True)
    language_model = {}
    if preset.lm_epochs:
        started = time.monotonic()
        texts = list(dict.fromkeys(mix.texts))  # each training text once (CAD pairs repeat)
        losses = pretrain.pretrain_language_model(
            model,
            texts,
            epochs=preset.lm_epochs,
            batch_size=preset.batch_size,
            learning_rate=preset.learning_rate,
            seed=seed,
        )
        language_model = {
            "texts": len(texts),
            "losses": losses,
            "seconds": round(time.monotonic() - started, 1),
        }

    checkpoint_dir = checkpoint_dir or out / ".checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=preset.patience, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            checkpoint_dir / f"{preset.name}-v{version}-best.keras",
            monitor="val_loss",
            save_best_only=True,
        ),
    ]
    targets = mix.labels
    if preset.distillation:
        started = time.monotonic()
        groups = id_blocks(train_split) if preset.teacher_folds == "movies" else None
        scores = teacher.out_of_fold_scores(train_split.texts, train_split.labels, seed, groups)
        targets = np.array(targets, dtype=np.float32)  # the IMDB reviews come first in the mix
        targets[: len(train_split)] = teacher.soft_targets(
            train_split.labels, scores, preset.distillation
        )
        print(f"teacher scores in {time.monotonic() - started:.0f} s", flush=True)

    batches = length_grouped_batches(mix.texts, targets, preset.batch_size, seed)
    validation = None
    if mix.validation_sets:
        # Chosen on every validation set at once (training/mix.py), not on IMDB's loss alone.
        callbacks = [SelectOnValidationSets(model, mix.validation_sets, preset.patience)]
    else:
        validation = length_grouped_batches(
            val_split.texts, val_split.labels, preset.batch_size, seed + 1
        )
    if trainer is not model:  # the same target for the whole model and its LSTM path
        batches = batches.map(lambda texts, y: (texts, (y, y)))
    started = time.monotonic()
    history = trainer.fit(
        batches,
        validation_data=validation,
        epochs=preset.max_epochs,
        shuffle=False,  # the batches are reshuffled by length_grouped_batches
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.monotonic() - started
    history = {k: [float(v) for v in values] for k, values in history.history.items()}
    if mix.validation_sets:
        history.update(callbacks[0].history)
        best_epoch = callbacks[0].best_epoch
    else:
        best_epoch = int(np.argmin(history["val_loss"])) + 1

    selection, bag = {}, {}
    if preset.fitted_bag_buckets and mix.validation_sets:
        texts, labels = mix.labelled()
        model, bag = fitted_bag.attach(
            model, preset, texts, labels, mix.validation_sets, preset.fitted_bag_buckets
        )
    if (preset.bag_buckets or bag) and mix.validation_sets:
        # The bag is there to help; if the LSTM alone does better on validation, it ships alone.
        model, selection = choose_whole_or_lstm(model, mix.validation_sets)
    val_scores = score_texts(model, val_split.texts)
    threshold = choose_threshold(val_split.labels, val_scores) if preset.tune_threshold else 0.5
    val_metrics = classification_metrics(val_split.labels, val_scores, threshold)
    if "val_loss" in history:
        val_metrics["loss"] = history["val_loss"][best_epoch - 1]
    print(f"validation: {json.dumps(val_metrics)}", flush=True)
    # The IMDB validation split is val_split itself: its metrics are val_metrics, not rescored.
    validation_sets = {
        name: val_metrics
        if labelled.split is val_split
        else classification_metrics(
            labelled.split.labels, score_texts(model, labelled.split.texts), threshold
        )
        for name, labelled in mix.validation_sets.items()
    }
    for name, metrics in validation_sets.items():
        print(f"validation {name}: accuracy {metrics['accuracy']:.4f}", flush=True)

    metadata = {
        "name": MODEL_NAME,
        "version": version,
        "preset": preset.name,
        "hyperparameters": preset.to_dict(),
        "trainable_parameters": trainable_parameters(model),
        "vocabulary_size": vectorizer.vocabulary_size(),
        "maxlen": preset.maxlen,
        "decision_threshold": threshold,
        "data": {
            "source": dataset.source.name,
            "sha256": dataset.sha256,
            "train_reviews": len(train_split),
            "validation_reviews": len(val_split),
            "test_reviews": len(dataset.test),
            "mix": mix.summary(),
        },
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
        "training": {
            "seed": seed,
            "seconds": round(seconds, 1),
            "epochs_run": len(history["loss"]),
            "best_epoch": best_epoch,
            "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
            **({"language_model": language_model} if language_model else {}),
        },
        "metrics": {"validation": val_metrics},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if validation_sets:
        metadata["metrics"]["validation_sets"] = validation_sets
    if bag:
        metadata["bag"] = bag
    if selection:
        metadata["selection"] = selection
    result = None
    if report:
        result = evaluate.evaluate_model(model, dataset, threshold, history=history)
        metadata["metrics"]["test"] = result.metrics
    return write_version(out / str(version), model, history, metadata, result)


def write_version(
    final: Path, model: keras.Model, history: dict, metadata: dict, result=None
) -> Path:
    """Writes a version folder: model, history, report, then metadata.json last.

    The folder is built under a hidden name and renamed into place, so a server
    polling the model directory never sees a half-written version.
    """
    if final.exists():
        raise FileExistsError(f"{final} already exists; pass another --version")
    staging = final.parent / f".staging-{final.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    # Save an uncompiled twin that shares the trained layers: no optimizer
    # state in the shipped file, and nothing but inference to load.
    keras.Model(model.inputs, model.outputs, name=model.name).save(staging / MODEL_FILE)
    (staging / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")
    if result is not None:
        evaluate.write_report(result, staging / "report", metadata)
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    staging.rename(final)
    print(f"wrote {final}", flush=True)
    return final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preset = get_preset(args.preset, max_epochs=args.epochs, **parse_overrides(args.set))
    except ValueError as e:
        print(f"sentiment-train: error: {e}", file=sys.stderr)
        return 2
    try:
        dataset = imdb.load(args.data)
        extra = (
            extra_data.load(args.extra_data, dataset.train.texts)
            if preset.data_mix != "imdb"
            else None
        )
        unlabelled = None
        if preset.unlabelled:
            unlabelled = load_unlabelled(args, dataset, args.seed)
            if unlabelled is None:
                preset = dataclasses.replace(preset, unlabelled=False)
    except imdb.DataError as e:
        print(f"sentiment-train: error: {e}", file=sys.stderr)
        return 2
    if args.limit:
        dataset = imdb.Dataset(
            train=limit_split(dataset.train, args.limit, args.seed),
            test=limit_split(dataset.test, args.limit, args.seed),
            source=dataset.source,
            sha256=dataset.sha256,
        )
    train(
        dataset,
        preset,
        args.out,
        version=args.version,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        report=not args.no_report,
        verbose=1 if sys.stdout.isatty() else 2,
        extra=extra,
        unlabelled=unlabelled,
    )
    return 0


def load_unlabelled(args, dataset: imdb.Dataset, seed: int) -> SoftLabelled | None:
    """The unlabelled reviews with the teacher's scores; None, said in one line, when no
    unlabelled data is given (a user with the labelled archive alone still trains)."""
    import os

    if not args.unlabelled_data and not os.environ.get(imdb.UNLABELLED_ENV_VAR):
        print(
            "sentiment-train: no unlabelled reviews given (--unlabelled-data): training on the "
            "labelled data alone",
            flush=True,
        )
        return None
    reviews = imdb.load_unlabelled(args.unlabelled_data, dataset.test.texts)
    scores, record = soft_labels.read(args.teacher_scores, reviews, seed)
    print(f"unlabelled: {len(reviews):,} reviews, scored by {record['teacher']}", flush=True)
    return SoftLabelled(reviews.texts, scores)


if __name__ == "__main__":
    sys.exit(main())
