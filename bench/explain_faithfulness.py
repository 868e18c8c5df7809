"""`make explain-eval`: how faithful Explain's attributions are, on seeded IMDB test reviews.

    .venv/bin/python -m bench.explain_faithfulness --reviews 500     # writes reports/explain/

Two measures, per review, through the served model (text in, score out):

- comprehensiveness (ERASER, DeYoung et al. 2020): delete the words with the top
  10% of attributions towards the predicted label (at least one) from the text
  and rescore: how far the score moves towards the other label. The same number
  of words the model saw, drawn at random (the mean of `RANDOM_DRAWS` draws), is
  the comparison; a review passes when the top words move it further.
- completeness (Sundararajan et al. 2017): the attributions sum to score(review)
  - score(baseline) within 5% (or 1e-4 when the two barely differ).

Also the time each explanation took in process, by review length.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RANDOM_DRAWS = 5
TOP_FRACTION = 0.10
REQUIRED_PASS_FRACTION = 0.90
DEFAULT_OUT = Path("reports/explain/faithfulness.json")


@dataclass(frozen=True)
class ReviewResult:
    words_seen: int
    deleted: int
    score: float
    top_moved: float  # towards the other label, in score units
    random_moved: float  # mean over the draws
    complete: bool
    relative_gap: float  # |delta| / |score - baseline score|
    steps: int
    explain_ms: float


def without_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each span replaced by a space (so its neighbours stay apart)."""
    pieces, done = [], 0
    for start, end in sorted(spans):
        pieces += [text[done:start], " "]
        done = end
    return "".join(pieces) + text[done:]


def measure(model, texts: list[str], seed: int = 0, say=print) -> list[ReviewResult]:
    """Explains each review, deletes its top and random words, and rescores the lot."""
    from server.explanations.explain import ABSOLUTE_TOLERANCE, TOLERANCE, explain_review

    rng = random.Random(seed)
    pending = []  # (explanation, direction, k, [top text, random texts...], ms)
    for index, text in enumerate(texts):
        started_s = time.perf_counter()
        explanation = explain_review(model, text)
        explain_ms = 1000 * (time.perf_counter() - started_s)
        seen = [w for w in explanation.words if w.attribution is not None]
        k = max(1, round(TOP_FRACTION * len(seen)))
        direction = 1.0 if explanation.is_positive else -1.0
        top = sorted(seen, key=lambda w: direction * w.attribution, reverse=True)[:k]
        variants = [without_spans(text, [(w.start, w.end) for w in top])]
        for _ in range(RANDOM_DRAWS):
            drawn = rng.sample(seen, k)
            variants.append(without_spans(text, [(w.start, w.end) for w in drawn]))
        pending.append((explanation, direction, k, len(seen), variants, explain_ms))
        if (index + 1) % 50 == 0:
            say(f"  explained {index + 1} of {len(texts)}")
    flat = [v for *_, variants, _ in pending for v in variants]
    scores = []
    for start in range(0, len(flat), 128):
        for result in model.predict(flat[start : start + 128]):
            # Deleting words can leave none; no words, no evidence: the middle.
            scores.append(result if isinstance(result, float) else 0.5)
    results, at = [], 0
    for explanation, direction, k, seen_count, variants, explain_ms in pending:
        moved = [direction * (explanation.score - s) for s in scores[at : at + len(variants)]]
        at += len(variants)
        gap = explanation.score - explanation.baseline_score
        delta = abs(explanation.convergence_delta)
        results.append(
            ReviewResult(
                words_seen=seen_count,
                deleted=k,
                score=explanation.score,
                top_moved=moved[0],
                random_moved=statistics.fmean(moved[1:]),
                complete=delta <= max(TOLERANCE * abs(gap), ABSOLUTE_TOLERANCE),
                relative_gap=delta / abs(gap) if gap else 0.0,
                steps=explanation.steps,
                explain_ms=explain_ms,
            )
        )
    return results


def summary(results: list[ReviewResult]) -> dict:
    n = len(results)
    wins = sum(r.top_moved > r.random_moved for r in results)
    steps: dict[str, int] = {}
    for r in results:
        steps[str(r.steps)] = steps.get(str(r.steps), 0) + 1
    near_230 = [r.explain_ms for r in results if 200 <= r.words_seen <= 260]
    return {
        "reviews": n,
        "comprehensiveness": {
            "top_beats_random": wins / n,
            "required": REQUIRED_PASS_FRACTION,
            "pass": wins / n >= REQUIRED_PASS_FRACTION,
            "mean_top_moved": statistics.fmean(r.top_moved for r in results),
            "mean_random_moved": statistics.fmean(r.random_moved for r in results),
            "top_fraction": TOP_FRACTION,
            "random_draws": RANDOM_DRAWS,
        },
        "completeness": {
            "within_tolerance": sum(r.complete for r in results) / n,
            "within_5_percent": sum(r.relative_gap <= 0.05 for r in results) / n,
            "pass": all(r.complete for r in results),
            "median_relative_gap": statistics.median(r.relative_gap for r in results),
            "max_relative_gap": max(r.relative_gap for r in results),
            "steps_used": dict(sorted(steps.items(), key=lambda kv: int(kv[0]))),
        },
        "explain_ms": {
            "p50_all": statistics.median(r.explain_ms for r in results),
            "p50_200_to_260_words": statistics.median(near_230) if near_230 else None,
            "reviews_200_to_260_words": len(near_230),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("IMDB_DATA", "../shared/data/aclImdb.tar.gz")
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/imdb-lstm"))
    parser.add_argument("--reviews", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from server.scoring.model import ServingModel
    from training.data import load

    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    model = ServingModel.load_latest(args.model_dir, device="cpu")
    model.warm_up()
    texts = load(args.data).test.texts
    sample = [texts[i] for i in random.Random(args.seed).sample(range(len(texts)), args.reviews)]
    say(f"explaining {len(sample)} test reviews with {model.describe()}")
    started_s = time.monotonic()
    results = measure(model, sample, args.seed, say)
    report = {
        "model": model.describe(),
        "seed": args.seed,
        "seconds": round(time.monotonic() - started_s, 1),
        **summary(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = report["comprehensiveness"]["pass"] and report["completeness"]["pass"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
