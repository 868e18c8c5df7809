"""Writes the evaluation report: metrics JSON, a markdown table and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

ROWS = ("accuracy", "precision", "recall", "f1", "roc_auc")
# The student report this product grew out of (100 epochs, overfit).
SEED_REPORTED = {"accuracy": 0.8404, "roc_auc": 0.90}


def write(result, out: Path, metadata: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": {
            "name": metadata.get("name"),
            "version": metadata.get("version"),
            "preset": metadata.get("preset"),
        },
        "test": result.metrics,
        "validation": metadata.get("metrics", {}).get("validation"),
        "tfidf_logreg_baseline": result.baseline,
        "seed_measured_here": result.seed_measured,
        "seed_reported": SEED_REPORTED,
    }
    if result.comparison:
        from training import compare

        summary["every_set"] = compare.to_json(result.comparison)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(result, metadata))
    _plot_roc(result, out / "roc.png")
    _plot_confusion(result.metrics["confusion_matrix"], out / "confusion.png")
    if result.history:
        _plot_history(result.history, out / "training.png")


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _markdown(result, metadata: dict) -> str:
    columns = [
        (
            f"{metadata.get('name')} v{metadata.get('version')} ({metadata.get('preset')})",
            result.metrics,
        ),
        ("TF-IDF 1-2gram + LR (same run)", result.baseline),
    ]
    if result.seed_measured:
        columns.append(("seed LSTM, measured here", result.seed_measured))
    columns.append(("seed LSTM, as reported", SEED_REPORTED))
    lines = [
        f"# Evaluation: {metadata.get('name')} version {metadata.get('version')}",
        "",
        f"All {result.metrics['examples']:,} test reviews; decision threshold "
        f"{result.metrics['threshold']}. The test set was used for this report only; "
        "the model was chosen and stopped on a validation split of the shuffled training data.",
        "",
        "| metric | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(_fmt(m.get(row)) for _, m in columns) + " |")
    (tn, fp), (fn, tp) = result.metrics["confusion_matrix"]
    lines += [
        "",
        "Confusion matrix of this model (rows: true label, columns: predicted):",
        "",
        "| | predicted negative | predicted positive |",
        "|---|---|---|",
        f"| negative | {tn} | {fp} |",
        f"| positive | {fn} | {tp} |",
        "",
        "![ROC curve](roc.png) ![Confusion matrix](confusion.png)",
    ]
    if result.history:
        lines += ["", "![Training and validation curves](training.png)"]
    if result.comparison:
        from training import compare

        lines += [""] + compare.markdown(result.comparison)
    if metadata.get("selection"):
        from training import compare

        lines += [""] + compare.selection_markdown(metadata["selection"], metadata.get("bag"))
    return "\n".join(lines) + "\n"


def _plot_roc(result, path: Path) -> None:
    fpr, tpr, _ = roc_curve(result.labels, result.scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"LSTM (AUC {result.metrics['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test set")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_confusion(matrix, path: Path) -> None:
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=color)
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix, test set")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_history(history: dict, path: Path) -> None:
    """Loss, and accuracy on training and on each validation set, per epoch. Models trained on
    a mix log one accuracy per validation set ("val <set>") instead of val_loss/val_accuracy."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    train_accuracy = next((k for k in history if k.endswith("accuracy") and "val" not in k), None)
    curves = {
        "loss": {"training": "loss", "validation": "val_loss"},
        "accuracy": {"training": train_accuracy, "validation": "val_accuracy"},
    }
    curves["accuracy"].update(
        {k.removeprefix("val "): k for k in history if k.startswith("val ") and "score" not in k}
    )
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (title, series) in zip(axes, curves.items(), strict=True):
        for label, key in series.items():
            if key in history:
                ax.plot(epochs, history[key], marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=title, title=title)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
