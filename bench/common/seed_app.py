"""The seed's way, kept as a reference: a Flask app calling `model.predict` once per request.

    python -m bench.common.seed_app --model-dir models/imdb-lstm --port 5000
    curl -s localhost:5000/predict -H 'Content-Type: application/json' -d '{"review": "Great!"}'

A faithful copy of the architecture we replaced (same Keras model, no
batching, werkzeug's threaded server), so the benchmark can compare against
it on the same machine. `run_load` is its load client: threads on keep-alive
connections, with results shaped like imdb_sentiment_client.bench.run_bench's.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common.server_proc import free_port
from imdb_sentiment_client.bench import percentile

DECISION_THRESHOLD = 0.5
REPO_ROOT = Path(__file__).resolve().parents[2]


def create_app(model_dir: Path):
    """The seed's app: POST /predict {"review": text} -> {"sentiment", "score"}."""
    import keras
    import tensorflow as tf
    from flask import Flask, jsonify, request

    import training.layers  # noqa: F401  registers the model's custom layers
    from server.scoring.model import find_latest_version

    model_path = find_latest_version(model_dir).path / "model.keras"
    model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        review = (request.get_json(silent=True) or {}).get("review")
        if not isinstance(review, str) or not review.strip():
            return jsonify(error='send JSON {"review": "..."}'), 400
        # One model.predict per request, as the seed did: no batching across callers.
        score = float(model.predict(tf.constant([review]), verbose=0)[0][0])
        sentiment = "Positive" if score >= DECISION_THRESHOLD else "Negative"
        return jsonify(sentiment=sentiment, score=score)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.common.seed_app", description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    create_app(args.model_dir).run(host=args.host, port=args.port, threaded=True)


# -- the load client --------------------------------------------------------------------


def post_review(connection: http.client.HTTPConnection, review: str) -> int:
    """One POST /predict on a kept-alive connection; returns the HTTP status."""
    body = json.dumps({"review": review})
    connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def wait_until_answering(port: int, process, timeout_s: float) -> None:
    """Posts a review until the app answers 200 (the first call also warms the model up)."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the seed app exited with {process.returncode} before answering")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status = post_review(connection, "a fine film")
        except OSError:
            status = None  # not listening yet
        if status == 200:
            return
        if status is not None:
            raise RuntimeError(f"the seed app answered HTTP {status} to a plain review")
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"the seed app did not answer within {timeout_s:g} s")
        time.sleep(0.3)


def run_load(port: int, reviews: list[str], concurrency: int, duration_s: float) -> dict:
    """`concurrency` threads post reviews for `duration_s`; throughput, latency and errors."""
    stop_at_s = time.monotonic() + duration_s
    latencies_s: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(index: int) -> None:
        texts = itertools.cycle(reviews[index % len(reviews) :] + reviews)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop_at_s:
            started_s = time.perf_counter()
            try:
                status = post_review(connection, next(texts))
            except OSError as exc:
                status = type(exc).__name__
                connection.close()
            with lock:
                if status == 200:
                    latencies_s.append(time.perf_counter() - started_s)
                else:
                    errors[str(status)] += 1

    started_s = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - started_s
    latencies_ms = sorted(1000 * s for s in latencies_s)
    done = len(latencies_ms)
    return {
        "concurrency": concurrency,
        "elapsed_s": round(elapsed_s, 4),
        "rpcs": done,
        "reviews": done,
        "rpc_per_s": round(done / elapsed_s, 2),
        "reviews_per_s": round(done / elapsed_s, 2),
        "latency_ms": {
            name: round(percentile(latencies_ms, fraction), 3)
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
    }


@contextmanager
def start_seed_app(model_dir: Path, log_path: Path, timeout_s: float = 180) -> Iterator[int]:
    """Runs the seed app in a subprocess until it answers; yields its port, then stops it."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.common.seed_app", "--model-dir", str(model_dir)]
            + ["--port", str(port)],
            cwd=REPO_ROOT,  # so `-m bench.common.seed_app` imports this checkout
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_answering(port, process, timeout_s)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
