"""results.json -> two PNGs: throughput and p99 latency against concurrency, with the references."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402


def _series(section: dict, key) -> tuple[list[int], list[float]]:
    runs = sorted(section["unary"], key=lambda run: run["concurrency"])
    return [run["concurrency"] for run in runs], [key(run) for run in runs]


def _axes(title: str, ylabel: str, concurrencies: list[int]):
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(concurrencies)
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("concurrent single-review unary calls")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    return figure, axes


def _plot_servers(axes, results: dict, key) -> None:
    for name, label, style in (
        ("batching_on", "gRPC, micro-batching on", "o-"),
        ("batching_off", "gRPC, batching off (max_batch_size=1)", "s--"),
    ):
        xs, ys = _series(results[name], key)
        axes.plot(xs, ys, style, label=label)
    flask = results["seed_flask"]
    axes.plot([flask["concurrency"]], [key(flask)], "r^", markersize=9, label="seed Flask app")


def write(results: dict, throughput_path: Path, p99_path: Path) -> None:
    concurrencies = sorted(
        {run["concurrency"] for run in results["batching_on"]["unary"]}
        | {results["seed_flask"]["concurrency"]}
    )
    figure, axes = _axes("Throughput against concurrency", "reviews/s", concurrencies)
    _plot_servers(axes, results, lambda run: run["reviews_per_s"])
    best = results["limit"]["best"]
    axes.axhline(
        best["reviews_per_s"],
        color="grey",
        linestyle=":",
        label=f"in-process limit (batch {best['batch_size']})",
    )
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(throughput_path)
    plt.close(figure)

    figure, axes = _axes("p99 latency against concurrency", "p99 latency (ms)", concurrencies)
    _plot_servers(axes, results, lambda run: run["latency_ms"]["p99"])
    batch_1 = results["limit"]["batch_1_latency"]["latency_ms"]["p50"]
    axes.axhline(batch_1, color="grey", linestyle=":", label="in-process batch-1 p50")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(p99_path)
    plt.close(figure)
