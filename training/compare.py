"""Every model beside every other on every evaluation set, in one run (the report's big table).

Columns: the evaluated version, its LSTM path alone (when a bag sits beside the
LSTM: the ablation), the other shipped versions, the seed preset, and TF-IDF +
LR fitted on the evaluated version's own training mix. Rows: IMDB test and the
validation sets (SST-2 dev, CAD dev and contrast dev, originals and edits apart).
Each column names the data it was trained on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from training import data as imdb
from training import versions
from training.baselines import tfidf_classifier
from training.data import Split
from training.extra_data import ExtraData
from training.metrics import classification_metrics, score_texts

IMDB_TEST = "IMDB test"


@dataclass
class Column:
    name: str
    trained_on: str
    metrics: dict[str, dict]


def evaluation_sets(test: Split, extra: ExtraData | None) -> dict[str, Split]:
    sets = {IMDB_TEST: test}
    if extra is not None:
        sets.update({name: s.split for name, s in extra.validation_sets().items()})
    return sets


def _metrics(scorer, sets: dict[str, Split], threshold: float, log, known=None) -> dict[str, dict]:
    """Each set's metrics; `known` holds scores already computed, by set name."""
    results = {}
    for name, split in sets.items():
        started = time.monotonic()
        scores = (known or {}).get(name)
        scores = scorer(split.texts) if scores is None else scores
        results[name] = classification_metrics(split.labels, scores, threshold)
        seconds = time.monotonic() - started
        log(f"  {name}: accuracy {results[name]['accuracy']:.4f} ({seconds:.0f} s)")
    return results


def _print_now(message: str) -> None:
    print(message, flush=True)  # make eval runs for minutes: show each set as it is scored


def describe_training_data(metadata: dict) -> str:
    data = metadata.get("data", {})
    mix = data.get("mix")
    if mix:
        return "; ".join(f"{k} {v:,}" for k, v in mix.items() if not k.startswith(("dev", "CAD o")))
    return f"IMDB train, {data.get('train_reviews', '?'):,} reviews"


def keras_column(name: str, version_dir: Path, sets, log) -> Column:
    metadata = json.loads((version_dir / "metadata.json").read_text())
    model = versions.load_model(version_dir / "model.keras")
    log(f"{name}:")
    threshold = metadata.get("decision_threshold", 0.5)
    metrics = _metrics(lambda t: score_texts(model, t), sets, threshold, log)
    return Column(name, describe_training_data(metadata), metrics)


def mix_texts(metadata: dict, dataset: imdb.Dataset, extra: ExtraData | None):
    """The evaluated version's training texts and labels, rebuilt from its metadata."""
    from training.mix import build_mix
    from training.model import get_preset
    from training.splits import split_train_validation

    hyper = metadata["hyperparameters"]
    preset = get_preset("tiny", **{k: v for k, v in hyper.items() if k != "name"})
    seed = metadata.get("training", {}).get("seed", 1337)
    train, validation = split_train_validation(dataset.train, preset.validation_fraction, seed)
    mix = build_mix(preset, train, validation, dataset.test, extra)
    return mix.texts, mix.labels, mix.describe().removeprefix("training mix: ")


def compare(
    model,
    metadata: dict,
    version_dir: Path,
    dataset: imdb.Dataset,
    extra: ExtraData | None,
    seed_dir: Path | None = versions.DEFAULT_SEED_MODEL_DIR,
    log=_print_now,
    test_scores=None,
) -> list[Column]:
    """`test_scores`: the model's IMDB test scores when already computed (make eval has)."""
    from training.model import lstm_path

    sets = evaluation_sets(dataset.test, extra)
    threshold = metadata.get("decision_threshold", 0.5)
    name = f"v{metadata.get('version')} ({metadata.get('preset')})"
    log(f"{name}:")
    columns = [
        Column(
            name,
            describe_training_data(metadata),
            _metrics(
                lambda t: score_texts(model, t),
                sets,
                threshold,
                log,
                {IMDB_TEST: test_scores},
            ),
        )
    ]
    reader = lstm_path(model)
    if reader is not None:
        log(f"{name}, LSTM path alone:")
        metrics = _metrics(lambda t: score_texts(reader, t), sets, threshold, log)
        columns.append(Column(f"{name}: LSTM path alone", "(the same model)", metrics))
    for other in sorted(version_dir.parent.iterdir(), key=lambda p: p.name):
        if other != version_dir and other.name.isdigit() and (other / "metadata.json").is_file():
            columns.append(keras_column(f"v{other.name}", other, sets, log))
    if seed_dir is not None:
        try:
            seed_version = versions.latest_version_dir(seed_dir)
            columns.append(keras_column("seed preset", seed_version, sets, log))
        except versions.ModelLoadError as e:
            log(f"seed preset left out: {e}")
    texts, labels, described = mix_texts(metadata, dataset, extra)
    log("TF-IDF 1-2gram + LR on the same mix:")
    classifier = tfidf_classifier().fit(texts, labels)
    metrics = _metrics(lambda t: classifier.predict_proba(t)[:, 1], sets, 0.5, log)
    columns.append(Column("TF-IDF + LR, same mix", described, metrics))
    return columns


def to_json(columns: list[Column]) -> list[dict]:
    return [{"name": c.name, "trained_on": c.trained_on, "metrics": c.metrics} for c in columns]


def markdown(columns: list[Column]) -> list[str]:
    sets = list(columns[0].metrics)
    lines = [
        "## Every set, side by side",
        "",
        "Accuracy (ROC AUC on IMDB test); all columns measured in this run. The dev sets are "
        "validation data: models were selected on them, never trained on them.",
        "",
        "| set | " + " | ".join(c.name for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name in sets:
        cells = []
        for c in columns:
            m = c.metrics[name]
            cell = f"{100 * m['accuracy']:.2f}%"
            if name == IMDB_TEST and m.get("roc_auc") is not None:
                cell += f" / {m['roc_auc']:.4f}"
            cells.append(cell)
        size = columns[0].metrics[name]["examples"]
        lines.append(f"| {name} ({size:,}) | " + " | ".join(cells) + " |")
    lines += ["", "Trained on:", ""]
    lines += [f"- **{c.name}**: {c.trained_on}" for c in columns]
    lines += [
        "",
        "The CAD dev and contrast originals are IMDB training reviews: a model trained on IMDB "
        'alone ("IMDB train" above) saw most of them in training, so its figures on those two '
        "rows are partly training accuracy. The mix leaves them out.",
    ]
    return lines


def selection_markdown(selection: dict, bag: dict | None = None) -> list[str]:
    """The bag's ablation on the validation sets, from the version's metadata["selection"]
    (and metadata["bag"] when the bag was fitted after the LSTM trained, not with it)."""
    accuracies, scores = selection["accuracies"], selection["selection_scores"]
    names = list(accuracies)
    if bag:
        how = (
            "After the LSTM had trained, a hashed uni+bigram bag was fitted beside it (logits "
            f"added; training/fitted_bag.py: NBSVM with C = {bag['c']}, the bag's logit weighed "
            f"{bag['weight']}, both chosen on validation from {len(bag['grid'])} pairs). Both "
            "were scored on the validation sets"
        )
    else:
        how = (
            "While training, a hashed uni+bigram bag sat beside the LSTM (logits added), with an "
            "extra loss on the LSTM path's own score. After training both were scored on the "
            "validation sets"
        )
    lines = [
        "## The LSTM path alone against the whole model (validation)",
        "",
        f"{how}; the **{selection['shipped']}** scored higher and is what ships.",
        "",
        "| set | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name in accuracies[names[0]]:
        cells = [f"{100 * accuracies[n][name]:.2f}%" for n in names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| selection score | " + " | ".join(f"{scores[n]:.4f}" for n in names) + " |")
    return lines
