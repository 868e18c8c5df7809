"""The shipped model's figures, read at build time from its own files, so the docs follow it.

The shipped model is the newest complete version under models/imdb-lstm (the one the
server serves by default): its metadata.json, report/metrics.json (what `make eval`
wrote) and report/*.png.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from docs.gen.settings_ref import cell

ROOT = Path(__file__).resolve().parents[2]
FAILURES = Path(__file__).with_name("failure-modes.json")
BASELINE_PREFIX = "TF-IDF"


@dataclass(frozen=True)
class Shipped:
    version_dir: Path
    metadata: dict
    report: dict  # report/metrics.json; {} when the version has not been evaluated

    @property
    def version(self) -> int:
        return int(self.metadata["version"])

    def columns(self) -> list[dict]:
        """The every-set comparison's columns, the shipped model first."""
        columns = list(self.report.get("every_set", []))
        own = [c for c in columns if c["name"].split(" ")[0] == f"v{self.version}"]
        return own + [c for c in columns if c not in own]

    def column(self, prefix: str) -> dict | None:
        return next((c for c in self.columns() if c["name"].startswith(prefix)), None)


@cache
def shipped() -> Shipped:
    from training.versions import DEFAULT_MODEL_DIR, latest_version_dir

    version_dir = latest_version_dir(DEFAULT_MODEL_DIR)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    report_file = version_dir / "report" / "metrics.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    return Shipped(version_dir, metadata, report)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _test(model: Shipped) -> dict:
    return model.report.get("test") or model.metadata.get("metrics", {}).get("test", {})


def values() -> dict[str, str]:
    """Inline figures for `{{ model.NAME }}` in the pages."""
    model = shipped()
    meta, test = model.metadata, _test(model)
    training = meta.get("training", {})
    baseline_mix = model.column(BASELINE_PREFIX)
    baseline_imdb = model.report.get("tfidf_logreg_baseline", {})
    every_set_baseline = baseline_mix["metrics"].get("IMDB test", {}) if baseline_mix else {}
    seconds = training.get("seconds")
    return {
        "name": meta.get("name", "imdb-lstm"),
        "version": str(model.version),
        "preset": meta.get("preset", "?"),
        "dir": str(model.version_dir.relative_to(ROOT)),
        "parameters": f"{meta.get('trainable_parameters', 0):,}",
        "vocabulary_size": f"{meta.get('vocabulary_size', 0):,}",
        "maxlen": str(meta.get("maxlen", "?")),
        "threshold": str(meta.get("decision_threshold", 0.5)),
        "test_accuracy": _percent(test.get("accuracy")),
        "test_auc": f"{test.get('roc_auc', 0):.4f}",
        "baseline_accuracy": _percent(every_set_baseline.get("accuracy")),
        "baseline_auc": f"{every_set_baseline.get('roc_auc', 0):.4f}",
        "baseline_imdb_accuracy": _percent(baseline_imdb.get("accuracy")),
        "baseline_imdb_auc": f"{baseline_imdb.get('roc_auc', 0):.4f}",
        "training_minutes": f"{seconds / 60:.0f}" if seconds else "?",
        "epochs_run": str(training.get("epochs_run", "?")),
        "best_epoch": str(training.get("best_epoch", "?")),
        "seed": str(training.get("seed", "?")),
        "tensorflow": meta.get("versions", {}).get("tensorflow", "?"),
        "keras": meta.get("versions", {}).get("keras", "?"),
        "created_at": meta.get("created_at", "?"),
        "remake": _remake(meta),
    }


def _remake(meta: dict) -> str:
    """The commands that make a version like the shipped one."""
    if "adversarial" in meta:
        return (
            f"make train PRESET={meta.get('base_preset', '?')} && "
            "make finetune BASE=models/imdb-lstm/<the version it wrote>"
        )
    return f"make train PRESET={meta.get('preset', '?')}"


def render_summary() -> str:
    model, v = shipped(), values()
    meta = model.metadata
    hyper = meta.get("hyperparameters", {})
    data = meta.get("data", {})
    mix = data.get("mix") or {"IMDB training reviews": data.get("train_reviews", "?")}
    rows = [
        ("version", f"{v['version']} (`{v['dir']}`), made {v['created_at']}"),
        ("preset", f"`{v['preset']}`"),
        ("architecture", _architecture(hyper)),
        ("trainable parameters", v["parameters"]),
        (
            "vocabulary",
            f"{v['vocabulary_size']} entries, "
            f"standardiser `{hyper.get('standardizer', 'default')}`",
        ),
        ("reads at most", f"the last {v['maxlen']} tokens of a review"),
        ("decision threshold", v["threshold"]),
        (
            "training data",
            "; ".join(f"{k}: {n:,}" if isinstance(n, int) else f"{k}: {n}" for k, n in mix.items())
            or "?",
        ),
        (
            f"training (version {meta['base_version']}'s LSTM)"
            if "base_version" in meta
            else "training",
            f"{v['training_minutes']} minutes on "
            f"{meta.get('training', {}).get('device', 'CPU')}, "
            f"{v['epochs_run']} epochs run, epoch {v['best_epoch']} kept (seed {v['seed']})",
        ),
        *_derived_rows(meta),
        ("made with", f"TensorFlow {v['tensorflow']}, Keras {v['keras']}"),
        ("data checksum", f"`{data.get('source', '?')}` SHA-256 `{data.get('sha256', '?')[:16]}…`"),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {name} | {cell(str(value))} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def _derived_rows(meta: dict) -> list[tuple[str, str]]:
    """What was done to a base version to make this one (sentiment-finetune, sentiment-fit-bag)."""
    rows = []
    tuned = meta.get("adversarial")
    if tuned:
        rows.append((
            "fine-tuned",
            f"adversarial training on the word vectors (epsilon {tuned['epsilon']}), "
            f"{tuned['seconds'] / 60:.0f} minutes, epoch {tuned['best_epoch']} of "
            f"{len(tuned['history']['epochs'])} kept (`sentiment-finetune`)",
        ))  # fmt: skip
    bag = meta.get("bag")
    if bag and "c" in bag:
        rows.append((
            "fitted bag",
            f"NBSVM, C {bag['c']}, logit weight {bag['weight']}, chosen on validation "
            f"({bag.get('seconds', 0):.0f} s)",
        ))  # fmt: skip
    return rows


def _architecture(hyper: dict) -> str:
    if not hyper:
        return "?"
    direction = "bidirectional " if hyper.get("bidirectional") else ""
    pooling = {"mean": "masked mean over tokens", "last": "last state"}.get(
        hyper.get("pooling", ""), hyper.get("pooling", "")
    )
    parts = [
        f"Embedding {hyper.get('vocab_size', '?'):,}×{hyper.get('embedding_dim', '?')}",
        f"{direction}LSTM({hyper.get('lstm_units', '?')})",
        pooling,
    ]
    if hyper.get("dense_units"):
        parts.append(f"Dense({hyper['dense_units']})")
    buckets = hyper.get("bag_buckets") or hyper.get("fitted_bag_buckets")
    if not buckets:
        parts.append("Dense(1, sigmoid)")
        return " → ".join(p for p in parts if p)
    parts.append("Dense(1): a logit")
    fitted = "fitted after the LSTM, " if hyper.get("fitted_bag_buckets") else ""
    bag = (
        f"; beside it, a linear bag of the words and {buckets:,} hash buckets of word pairs "
        f"({fitted}its logit added), then sigmoid"
    )
    return " → ".join(p for p in parts if p) + bag


def render_every_set() -> str:
    """Accuracy of every column on every evaluation set, the shipped model first, in bold."""
    model = shipped()
    columns = model.columns()
    if not columns:
        return _missing_report(model)
    sets = list(columns[0]["metrics"])
    header = "| set | " + " | ".join(
        f"**{c['name']}** (shipped)" if i == 0 else c["name"] for i, c in enumerate(columns)
    )
    lines = [header + " |", "|---" * (len(columns) + 1) + "|"]
    for name in sets:
        examples = columns[0]["metrics"][name].get("examples")
        label = f"{name} ({examples:,})" if examples else name
        cells = []
        for i, column in enumerate(columns):
            metrics = column["metrics"].get(name, {})
            text = _percent(metrics.get("accuracy"))
            if name == "IMDB test" and metrics.get("roc_auc") is not None:
                text += f" / AUC {metrics['roc_auc']:.4f}"
            cells.append(f"**{text}**" if i == 0 else text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Each column was trained on:", ""]
    lines += [f"- **{c['name']}**: {c.get('trained_on', '?')}" for c in columns]
    return "\n".join(lines) + "\n"


def render_test_metrics() -> str:
    """IMDB test metrics beside the baselines `make eval` measured in the same run."""
    model = shipped()
    test = _test(model)
    if not test:
        return _missing_report(model)
    columns = [(f"v{model.version} (shipped)", test)]
    for key, name in (
        ("tfidf_logreg_baseline", "TF-IDF 1-2gram + LR, IMDB train only"),
        ("seed_measured_here", "seed LSTM, measured here"),
        ("seed_reported", "seed LSTM, as reported"),
    ):
        if model.report.get(key):
            columns.append((name, model.report[key]))
    lines = ["| metric | " + " | ".join(name for name, _ in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        cells = [
            f"{values[metric]:.4f}" if values.get(metric) is not None else "–"
            for _, values in columns
        ]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    matrix = test.get("confusion_matrix")
    if matrix:
        lines += [
            "",
            f"Confusion matrix of version {model.version} on the {test.get('examples', 0):,} "
            "test reviews (rows: true label):",
            "",
            "| | predicted negative | predicted positive |",
            "|---|---|---|",
            f"| negative | {matrix[0][0]:,} | {matrix[0][1]:,} |",
            f"| positive | {matrix[1][0]:,} | {matrix[1][1]:,} |",
        ]
    return "\n".join(lines) + "\n"


def render_validation() -> str:
    """The validation sets the version was selected on, from its metadata."""
    model = shipped()
    sets = model.metadata.get("metrics", {}).get("validation_sets", {})
    if not sets:
        sets = {"validation": model.metadata.get("metrics", {}).get("validation", {})}
    lines = ["| validation set | examples | accuracy | ROC AUC |", "|---|---|---|---|"]
    for name, metrics in sets.items():
        auc = metrics.get("roc_auc")
        lines.append(
            f"| {name} | {metrics.get('examples', 0):,} | {_percent(metrics.get('accuracy'))} "
            f"| {'–' if auc is None else f'{auc:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


def _missing_report(model: Shipped) -> str:
    return (
        f'!!! warning "Version {model.version} has no evaluation report yet"\n\n'
        f"    `{model.version_dir.relative_to(ROOT)}/report/metrics.json` is missing: "
        "run `make eval`.\n"
    )


def failure_modes(regenerate: bool = True) -> dict | None:
    """docs/gen/failure-modes.json when it was made for the shipped model's file; made anew
    (docs/gen/failure_modes.py scores the sets, about a minute) when it was not."""
    from docs.gen.failure_modes import model_fingerprint

    model = shipped()
    fingerprint = model_fingerprint(model.version_dir)
    if FAILURES.is_file():
        found = json.loads(FAILURES.read_text())
        if found["model"].get("model_sha256") == fingerprint:
            return found
    if not regenerate:
        return None
    done = subprocess.run(
        [sys.executable, "-m", "docs.gen.failure_modes"], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"docs/gen/failure-modes.json is not for version {model.version}, and making it "
            f"failed:\n{done.stderr[-2000:]}"
        )
    return failure_modes(regenerate=False)


def render_failures() -> str:
    found = failure_modes()
    counts = found["counts"]
    lines = ["| what | count |", "|---|---|"]
    lines += [f"| {name} | {value:,} |" for name, value in counts.items()]
    lines += ["", "#### Edits it reads wrong", ""]
    lines += [
        "A review it scores right, and the same review minimally edited by a person so that its "
        "label flips, which it scores wrong (the changed stretches, with a few words around):",
        "",
        "| set | original → edited | edit's label | score of original → edit |",
        "|---|---|---|---|",
    ]
    for row in found["cad"] + found["contrast"]:
        lines.append(
            f"| {row['set']} | {cell(row['original'])}<br>→ {cell(row['edited'])} "
            f"| {row['edited_label']} | {row['score_original']:.3f} → {row['score_edited']:.3f} |"
        )
    lines += ["", "#### Sentences it reads wrong (SST-2 dev)", ""]
    lines += ["| sentence | label | score |", "|---|---|---|"]
    seen = set()
    for row in found["sst2_negation"] + found["sst2_confident"]:
        if row["text"] in seen:
            continue
        seen.add(row["text"])
        lines.append(f"| {cell(row['text'])} | {row['label']} | {row['score']:.3f} |")
    lines += ["", "#### Probe sentences", ""]
    lines += ["| sentence | meant | score | right? |", "|---|---|---|---|"]
    for row in found["probes"]:
        lines.append(
            f"| {cell(row['text'])} | {row['label']} | {row['score']:.3f} "
            f"| {'yes' if row['right'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"
