"""Tables from the committed measurement reports (reports/), which the bench code writes."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPLAIN = ROOT / "reports" / "explain"


def render_explain() -> str:
    """Explain's faithfulness and speed, from `make explain-eval` and `make explain-bench`."""
    faith = json.loads((EXPLAIN / "faithfulness.json").read_text())
    speed = json.loads((EXPLAIN / "speed.json").read_text())
    comp, full = faith["comprehensiveness"], faith["completeness"]
    steps = ", ".join(f"{n} nodes for {count}" for n, count in full["steps_used"].items())
    flood = speed["predict_under_flood"]
    lo, hi = speed["words"]
    lines = [
        f"Faithfulness (`make explain-eval`: {faith['model']}, {faith['reviews']} test reviews "
        f"drawn with seed {faith['seed']}; `reports/explain/faithfulness.json`):",
        "",
        "| measure | result | bar |",
        "|---|---|---|",
        f"| comprehensiveness: deleting the top {comp['top_fraction']:.0%} of words (by "
        "attribution towards the predicted label) moves the score further than deleting as many "
        f"random words (mean of {comp['random_draws']} draws) "
        f"| on **{comp['top_beats_random']:.1%}** "
        f"of reviews; mean move {comp['mean_top_moved']:.3f} vs {comp['mean_random_moved']:.3f} "
        f"| ≥ {comp['required']:.0%} |",
        "| completeness: the attributions sum to score − baseline score within 5% "
        f"| **{full['within_5_percent']:.1%}** of reviews; median gap "
        f"{full['median_relative_gap']:.2%}, largest {full['max_relative_gap']:.1%} | all |",
        f"| quadrature nodes used (`steps`) | {steps} | |",
        "",
        f"Speed (`make explain-bench`: {speed['reviews']} test reviews of {lo}–{hi} words, "
        "`reports/explain/speed.json`):",
        "",
        "| | p50 | p90 | bar |",
        "|---|---|---|---|",
    ]
    for key, name in (
        ("in_process_ms", "in process"),
        ("grpc_ms", "through the server, gRPC `Explain`"),
        ("http_ms", "through the server, `POST /explain`"),
    ):
        lines.append(
            f"| {name} | {speed[key]['p50']:.0f} ms | {speed[key]['p90']:.0f} ms | p50 ≤ 150 ms |"
        )
    lines += [
        "",
        f"Predict's p99 with {flood['predict_callers']} callers in a loop, without and with "
        f"{flood['explain_callers']} more callers sending `Explain` back to back (rounds "
        "alternating, median of the rounds): "
        f"{flood['p99_ms_quiet']:.0f} ms → {flood['p99_ms_flood']:.0f} ms, a ratio of "
        f"**{flood['ratio']:.2f}** (bar: ≤ 2).",
    ]
    return "\n".join(lines) + "\n"
