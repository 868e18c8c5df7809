"""The shipped model's mistakes on the evaluation sets, for the model card: found by scoring them.

    .venv/bin/python -m docs.gen.failure_modes        # writes docs/gen/failure-modes.json

Scores the contrast sets, the CAD dev pairs and SST-2 dev with the newest version under
models/imdb-lstm and keeps the edits it gets wrong (with the words the edit changed),
the sentences it gets wrong, and a few probe sentences. `make docs` renders the file and
says so when it was made for another version than the one shipped.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("failure-modes.json")
DATA = ROOT.parent / "shared" / "data" / "aclImdb.tar.gz"
EXTRA = ROOT.parent / "shared" / "data" / "extra"
# Sentences that show what the model reads and misreads; the first three are issue #11's.
PROBES = (
    ("The movie was not bad at all.", 1),
    ("I would not recommend this to anyone.", 0),
    ("The first half was slow but the ending was amazing and I left the cinema smiling.", 1),
    ("I expected to hate it, and I did not.", 1),
    ("Not a single scene worked for me.", 0),
    ("A masterpiece. Of boredom.", 0),
    (
        "The acting was great, the script was great, the direction was great: "
        "shame about the film.",
        0,
    ),
)
CONTEXT_WORDS = 5
# Pairs whose edit changed more stretches than this are not shown: too long to read.
MAX_EDITS_SHOWN = 4
EXAMPLES_PER_SET = 6


def model_fingerprint(version_dir: Path) -> str:
    return hashlib.sha256((version_dir / "model.keras").read_bytes()).hexdigest()


def edit_snippet(original: str, edited: str) -> tuple[str, str, int]:
    """The stretches of words the edit changed, with a little context, from both texts,
    and how many separate stretches it changed."""
    a, b = original.replace("<br />", " ").split(), edited.replace("<br />", " ").split()
    opcodes = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    changed = [op for op in opcodes if op[0] != "equal"]

    def windows(words, spans):
        parts, last_end = [], 0
        for start, end in spans:
            start, end = max(0, start - CONTEXT_WORDS), min(len(words), end + CONTEXT_WORDS)
            start = max(start, last_end)
            gap = "… " if start > last_end or (not parts and start > 0) else ""
            parts.append(gap + " ".join(words[start:end]))
            last_end = end
        return " ".join(parts) + (" …" if last_end < len(words) else "")

    shown = changed[:MAX_EDITS_SHOWN]
    before = windows(a, [(op[1], op[2]) for op in shown])
    after = windows(b, [(op[3], op[4]) for op in shown])
    return before, after, len(changed)


def _paired_mistakes(name, originals, edits, scores_o, scores_e, threshold):
    """Pairs whose original the model gets right and whose edit it gets wrong."""
    rows = []
    for i, (orig, edit) in enumerate(zip(originals, edits, strict=True)):
        right_o = (scores_o[i] >= threshold) == bool(orig[1])
        right_e = (scores_e[i] >= threshold) == bool(edit[1])
        if right_o and not right_e:
            before, after, edits = edit_snippet(orig[0], edit[0])
            rows.append(
                {
                    "set": name,
                    "original": before,
                    "edited": after,
                    "edited_label": "positive" if edit[1] else "negative",
                    "score_original": round(float(scores_o[i]), 3),
                    "score_edited": round(float(scores_e[i]), 3),
                    "edits": edits,
                }
            )
    # The clearest cases first: few edits, read confidently wrong.
    rows.sort(key=lambda r: (r["edits"], -abs(r["score_edited"] - 0.5)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the labelled IMDB archive")
    parser.add_argument("--extra-data", type=Path, default=EXTRA, help="sst2/, cad/, contrast/")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON goes")
    args = parser.parse_args(argv)

    import numpy as np

    from training import data as imdb
    from training import extra_data
    from training.metrics import score_texts
    from training.versions import DEFAULT_MODEL_DIR, latest_version_dir, load_model

    version_dir = latest_version_dir(DEFAULT_MODEL_DIR)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    threshold = float(metadata.get("decision_threshold", 0.5))
    model = load_model(version_dir / "model.keras")
    extra = extra_data.load(args.extra_data, imdb.load(args.data).train.texts)

    def scored(labelled):
        texts, labels = labelled.split.texts, labelled.split.labels
        return list(zip(texts, labels.tolist(), strict=True)), score_texts(model, texts)

    contrast_o, s_co = scored(extra.contrast_original)
    contrast_e, s_ce = scored(extra.contrast_edited)
    # CAD's halves come in the file's order per set; pair them by batch id.
    cad_o, s_cadO = scored(extra.cad_dev_original)
    cad_r, s_cadR = scored(extra.cad_dev_revised)
    order_o = np.argsort(extra.cad_dev_original.pairs, kind="stable")
    order_r = np.argsort(extra.cad_dev_revised.pairs, kind="stable")
    cad_o, s_cadO = [cad_o[i] for i in order_o], s_cadO[order_o]
    cad_r, s_cadR = [cad_r[i] for i in order_r], s_cadR[order_r]
    sst2, s_sst2 = scored(extra.sst2_dev)

    contrast = _paired_mistakes("contrast", contrast_o, contrast_e, s_co, s_ce, threshold)
    cad = _paired_mistakes("CAD dev", cad_o, cad_r, s_cadO, s_cadR, threshold)
    shown = [r for r in contrast + cad if r["edits"] <= MAX_EDITS_SHOWN]
    wrong_sentences = [
        {
            "text": text,
            "label": "positive" if label else "negative",
            "score": round(float(score), 3),
        }
        for (text, label), score in zip(sst2, s_sst2, strict=True)
        if (score >= threshold) != bool(label)
    ]
    wrong_sentences.sort(key=lambda r: (-abs(r["score"] - 0.5), len(r["text"])))
    negated = [r for r in wrong_sentences if " not " in f" {r['text']} " or "n't" in r["text"]]
    probe_scores = score_texts(model, [text for text, _ in PROBES])

    result = {
        "model": {
            "name": metadata.get("name", "imdb-lstm"),
            "version": int(metadata["version"]),
            "model_sha256": model_fingerprint(version_dir),
            "threshold": threshold,
        },
        "counts": {
            "contrast pairs": len(contrast_o),
            "contrast: original right, edit wrong": len(contrast),
            "CAD dev pairs": len(cad_o),
            "CAD dev: original right, revision wrong": len(cad),
            "SST-2 dev sentences": len(sst2),
            "SST-2 dev: wrong": len(wrong_sentences),
            "SST-2 dev: wrong, with a negation": len(negated),
        },
        "contrast": [r for r in shown if r["set"] == "contrast"][:EXAMPLES_PER_SET],
        "cad": [r for r in shown if r["set"] == "CAD dev"][:EXAMPLES_PER_SET],
        "sst2_confident": [r for r in wrong_sentences if len(r["text"]) < 140][:EXAMPLES_PER_SET],
        "sst2_negation": [r for r in negated if len(r["text"]) < 140][:EXAMPLES_PER_SET],
        "probes": [
            {
                "text": text,
                "label": "positive" if label else "negative",
                "score": round(float(score), 3),
                "right": bool((score >= threshold) == bool(label)),
            }
            for (text, label), score in zip(PROBES, probe_scores, strict=True)
        ],
    }
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} for {result['model']['name']} version {result['model']['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
