"""`make bench`: the whole side-by-side comparison in one run, written to reports/bench/.

    .venv/bin/python -m bench.run            # the full plan: at most 10 minutes on 2 cores
    .venv/bin/python -m bench.run --quick    # CI's smoke run: every section, figures meaningless

One run measures, on a seeded sample of real IMDB test reviews: the in-process
limit of the serving function, the server with micro-batching on and off,
many reviews per request (Predict x32, StreamPredict), the seed's Flask app,
the server's memory, a few (max_batch_size, max_delay_ms) pairs, and the Open Inference
Protocol's doors beside their native twins (bench/protocol_doors.py). Ratios
between them are what the report judges; absolute figures on a shared
machine are noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import acceptance, paths, report
from bench.common import plots
from bench.common.context import Context, say
from bench.common.plan import FULL, QUICK
from bench.common.reviews import data_path, sample_test_reviews, write_reviews
from bench.common.seed_app import run_load, start_seed_app
from bench.doors import measure_doors
from bench.limit import batch_sizes_up_to, best
from bench.loads import measure_batching
from bench.protocol_doors import measure_protocol_doors
from bench.tuning import measure_tuning
from server.config import DEFAULT_MODEL_DIR, ServerConfig
from server.errors import ModelLoadError
from server.scoring.versions import complete_versions
from training.data import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "reports" / "bench"
# The fixed reference of issue 15: the version shipped when the fast path was built.
REFERENCE_VERSION = 2
OUTPUT_FILES = ("results.json", "report.md", "throughput.png", "p99_latency.png")


# -- in-process ---------------------------------------------------------------------------


def measure_in_process(ctx: Context, max_batch_size: int, largest_batch_size: int) -> dict:
    """The scoring paths side by side, the limit by batch size, padding's cost on short
    reviews, and the paths' agreement on the test set; TensorFlow in this process."""
    from bench.padding import measure_padding
    from server.scoring.model import ServingModel
    from server.scoring.versions import complete_versions

    served = complete_versions(ctx.model_dir)[0]
    fast = ServingModel.load_version(served, device="cpu")
    plain = ServingModel.load_version(served, device="cpu-keras")
    for model in (fast, plain):
        model.warm_up()
    models = {"fast": fast, "keras": plain}
    if fast.fast_path_lanes > 1:
        models = {"fast": fast, "fast_1_lane": fast.with_fast_path_lanes(1), "keras": plain}
    say(f"in-process: {fast.describe()} beside {plain.describe()}")
    if fast.scoring_path != "fast":
        say(f"  the fast path does not fit this model: {fast.fallback_reason}")
    sizes = batch_sizes_up_to(largest_batch_size)
    predicts = {name: model.predict for name, model in models.items()}
    swept = paths.sweep(predicts, ctx.reviews, sizes, ctx.plan.paths_s, ctx.plan.paths_rounds)
    for point, keras_point in zip(swept["fast"], swept["keras"], strict=True):
        say(
            f"  batch {point['batch_size']}: fast {point['reviews_per_s']:.0f} reviews/s, "
            f"keras {keras_point['reviews_per_s']:.0f}"
        )
    # Latency is judged on the reviews the c=1 load sends first, one pass, the paths in turns.
    first = ctx.reviews[: ctx.plan.latency_reviews]
    latency = paths.batch_1_latency({"fast": fast.predict, "keras": plain.predict}, first)
    say(f"  batch-1 p50 over {len(first)} reviews: {latency}")
    texts, labels = ctx.test_texts, ctx.test_labels
    if ctx.plan.agreement_reviews:
        texts, labels = texts[: ctx.plan.agreement_reviews], labels[: ctx.plan.agreement_reviews]
    agreement = paths.agreement(fast, plain, texts, labels)
    say(f"  agreement over {len(texts)} test reviews: {agreement}")
    # Padding and grouping by length matter to the Keras path (it runs on GPUs).
    padding = measure_padding(plain, ctx.reviews, max_batch_size, ctx.plan.padding_s)
    say(
        f"  keras path, short reviews: as served {padding['speedup']}x padded to maxlen; "
        f"grouped by length {padding['grouping']['speedup']}x padded to the batch's longest"
    )
    reference = None
    if ctx.reference_version != served.version:
        reference = measure_reference(ctx, sizes, max_batch_size)
    for model in models.values():
        model.close()
    points = swept["fast"]
    return {
        "model": {
            "name": fast.name,
            "version": fast.version,
            "preset": fast.preset,
            "maxlen": fast.maxlen,
            "scoring_path": fast.scoring_path,
            "fast_path_lanes": fast.fast_path_lanes,
        },
        "limit": {
            "points": points,
            "best": best(points, max_batch_size),
            "batch_1": next(p for p in points if p["batch_size"] == 1),
            "batch_1_latency": {
                "batch_size": 1,
                "batches": latency["fast"]["reviews"],
                "latency_ms": latency["fast"],
            },
            "max_batch_size": max_batch_size,
            "grouping_cost": dataclasses.asdict(plain.grouping_cost),
        },
        "paths": {
            "version": served.version,
            "sweep": swept,
            "batch_1_latency": latency,
            "agreement": agreement,
            "reference": reference,
        },
        "padding": padding,
    }


def measure_reference(ctx: Context, sizes: list[int], max_batch_size: int) -> dict:
    """The fixed reference version, fast against Keras, measured the same way."""
    from server.scoring.model import ServingModel
    from server.scoring.versions import complete_versions

    version = complete_versions(ctx.reference_dir)[0]
    fast = ServingModel.load_version(version, device="cpu")
    plain = ServingModel.load_version(version, device="cpu-keras")
    for model in (fast, plain):
        model.warm_up()
    say(f"reference in-process: {fast.describe()} beside {plain.describe()}")
    predicts = {"fast": fast.predict, "keras": plain.predict}
    swept = paths.sweep(predicts, ctx.reviews, sizes, ctx.plan.paths_s, ctx.plan.paths_rounds)
    first = ctx.reviews[: ctx.plan.latency_reviews]
    latency = paths.batch_1_latency(predicts, first)
    for model in (fast, plain):
        model.close()
    return {"version": version.version, "sweep": swept, "batch_1_latency": latency}


# -- the seed's way -----------------------------------------------------------------------


def measure_seed_flask(ctx: Context) -> dict:
    say("seed-style Flask app")
    with start_seed_app(ctx.model_dir, ctx.work_dir / "seed-flask.log") as port:
        result = run_load(port, ctx.reviews, ctx.plan.flask_concurrency, ctx.plan.flask_s)
    say(f"  flask c={result['concurrency']}: {result['reviews_per_s']:.1f} reviews/s")
    return result


# -- the run ------------------------------------------------------------------------------


def run(ctx: Context, sample_description: dict) -> dict:
    defaults_config = ServerConfig()
    defaults = {
        "max_batch_size": defaults_config.max_batch_size,
        "max_delay_ms": defaults_config.max_delay_ms,
    }
    largest = max([defaults["max_batch_size"], *(n for n, _ in ctx.plan.tuning_candidates)])
    in_process = measure_in_process(ctx, defaults["max_batch_size"], largest)
    batching_on, batching_off = measure_batching(ctx)
    protocol_doors = measure_protocol_doors(ctx)
    doors = measure_doors(ctx)
    seed_flask = measure_seed_flask(ctx)
    tuning = measure_tuning(ctx, defaults)
    return {
        "meta": {
            "plan": ctx.plan.to_dict(),
            "model": in_process["model"],
            "data": sample_description,
            "server_defaults": defaults,
            "client_procs": ctx.procs,
        },
        "limit": in_process["limit"],
        "paths": in_process["paths"],
        "padding": in_process["padding"],
        "batching_on": batching_on,
        "batching_off": batching_off,
        "many_reviews": batching_on["many_reviews"],
        "seed_flask": seed_flask,
        "memory": batching_on["memory"],
        "tuning": tuning,
        "protocol_doors": protocol_doors,
        "doors": doors,
    }


def machine() -> dict:
    import grpc
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "grpcio": grpc.__version__,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run: seconds per section")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument(
        "--data",
        help="aclImdb .tar.gz or directory (default: $IMDB_DATA, else "
        "../shared/data/aclImdb.tar.gz)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0, help="which reviews are sampled")
    parser.add_argument("--procs", type=int, default=1, help="load-client processes per gRPC run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    plan = QUICK if args.quick else FULL
    started_s = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="sentiment-bench-") as work_dir:
        work_dir = Path(work_dir)
        try:
            model_dir = snapshot_model(
                args.model_dir, work_dir / "model"
            )  # fail before anything slow
            sample = sample_test_reviews(data_path(args.data), plan.sample_size, args.seed)
        except (ModelLoadError, DataError, OSError) as exc:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 2
        say(f"{len(sample.reviews)} test reviews from {sample.source} (seed {args.seed})")
        input_path = write_reviews(sample.reviews, work_dir / "reviews.txt")
        reference_dir, reference_version = snapshot_reference(
            args.model_dir, model_dir, work_dir / "reference"
        )
        ctx = Context(
            plan,
            model_dir,
            input_path,
            sample.reviews,
            work_dir,
            args.procs,
            reference_dir,
            reference_version,
            sample.test_texts,
            sample.test_labels,
        )
        results = run(ctx, sample.describe())
    elapsed_s = time.monotonic() - started_s
    results["meta"]["model"]["source_dir"] = str(args.model_dir.resolve())
    results["meta"].update(
        started_at=started_at,
        elapsed_s=round(elapsed_s, 1),
        quick=args.quick,
        machine=machine(),
    )
    results["acceptance"] = acceptance.judge(results, elapsed_s)
    write_outputs(results, args.out)
    print(report.acceptance_table(results["acceptance"]))
    say(f"wrote {', '.join(OUTPUT_FILES)} to {args.out} in {elapsed_s:.0f} s")
    return 0


def snapshot_model(model_dir: Path, into: Path) -> Path:
    """Copies the newest complete version of `model_dir` under `into`, which is returned: every
    measurement of the run sees that one version even if a newer one lands meanwhile."""
    version = complete_versions(model_dir)[0]
    shutil.copytree(version.path, into / version.path.name)
    return into


def snapshot_reference(model_dir: Path, served_dir: Path, into: Path) -> tuple[Path, int]:
    """(a model directory holding only REFERENCE_VERSION, that version), copied like the served
    one; the served snapshot itself where that version is served or absent."""
    served = complete_versions(served_dir)[0].version
    found = [v for v in complete_versions(model_dir) if v.version == REFERENCE_VERSION]
    if served == REFERENCE_VERSION or not found:
        return served_dir, served
    shutil.copytree(found[0].path, into / found[0].path.name)
    return into, REFERENCE_VERSION


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(report.render(results))
    plots.write(results, out / "throughput.png", out / "p99_latency.png")


if __name__ == "__main__":
    sys.exit(main())
