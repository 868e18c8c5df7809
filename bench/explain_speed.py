"""`make explain-bench`: how fast Explain is, and what a flood of it costs Predict.

    .venv/bin/python -m bench.explain_speed          # about 3 minutes; reports/explain/speed.json

On real IMDB test reviews of 220-240 words (tokens the model sees):

1. in process: `explain_review` with the shipped model, p50 of every review twice;
2. through a `sentiment-server` subprocess: one Explain call at a time, over gRPC
   and over HTTP (POST /explain), p50;
3. Predict under an Explain flood: single-review Predict from 8 callers in a loop,
   p99 latency, in rounds that alternate without and with `FLOOD_CALLERS` more
   callers sending Explain calls back to back through the client library (whose
   retry policy backs off when the Explain queue is full; calls still refused
   are counted). The machine is shared, so the rounds alternate and the report
   gives the ratio of the medians of the rounds' p99s, and each pair's ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bench.common.server_proc import free_port, start_server

WORDS_LOW, WORDS_HIGH = 220, 240
PREDICT_CALLERS = 8
FLOOD_CALLERS = 8
FLOOD_TIMEOUT_S = 5.0
DEFAULT_OUT = Path("reports/explain/speed.json")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def reviews_of_about_230_words(texts: list[str], count: int, seed: int) -> list[str]:
    from server.explanations.word_spans import standardized_tokens

    fitting = [t for t in texts if WORDS_LOW <= len(standardized_tokens(t)) <= WORDS_HIGH]
    return random.Random(seed).sample(fitting, min(count, len(fitting)))


def in_process_ms(model_dir: Path, reviews: list[str]) -> list[float]:
    from server.explanations.explain import explain_review
    from server.scoring.model import ServingModel

    model = ServingModel.load_latest(model_dir, device="cpu")
    model.warm_up()
    explain_review(model, reviews[0])
    times = []
    for review in reviews * 2:
        started_s = time.perf_counter()
        explain_review(model, review)
        times.append(1000 * (time.perf_counter() - started_s))
    return times


def http_explain(port: int, review: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/explain",
        data=json.dumps({"review": review}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def grpc_explain_fn(target: str, timeout_s: float = 30.0):
    """A callable explaining one review over gRPC with the library's default retry policy."""
    from imdb_sentiment_client import SentimentClient

    return SentimentClient(target, timeout_s=timeout_s).explain


def through_server_ms(explain, reviews: list[str]) -> list[float]:
    explain(reviews[0])
    times = []
    for review in reviews * 2:
        started_s = time.perf_counter()
        explain(review)
        times.append(1000 * (time.perf_counter() - started_s))
    return times


def predict_p99_ms(target: str, reviews: list[str], duration_s: float, flood) -> dict:
    """Single-review Predict from PREDICT_CALLERS threads for duration_s; flood() runs
    meanwhile on FLOOD_CALLERS threads when given."""
    from imdb_sentiment_client import DeadlineExceededError, OverloadedError, SentimentClient

    stop = threading.Event()
    latencies: list[float] = []
    floods = {"explained": 0, "refused": 0, "deadline_exceeded": 0}

    def predict_caller(seed: int) -> None:
        rng = random.Random(seed)
        with SentimentClient(target, timeout_s=30, retry=None) as client:
            while not stop.is_set():
                review = rng.choice(reviews)
                started_s = time.perf_counter()
                client.predict([review])
                latencies.append(1000 * (time.perf_counter() - started_s))

    def flood_caller(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                flood(rng.choice(reviews))
                floods["explained"] += 1
            except OverloadedError:
                floods["refused"] += 1
                time.sleep(0.001)
            except DeadlineExceededError:
                floods["deadline_exceeded"] += 1

    threads = [threading.Thread(target=predict_caller, args=(i,)) for i in range(PREDICT_CALLERS)]
    if flood is not None:
        threads += [
            threading.Thread(target=flood_caller, args=(100 + i,)) for i in range(FLOOD_CALLERS)
        ]
    for thread in threads:
        thread.start()
    time.sleep(duration_s)
    stop.set()
    for thread in threads:
        thread.join(60)
    return {
        "predict_calls": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        **({f"explain_{outcome}": count for outcome, count in floods.items()} if flood else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("IMDB_DATA", "../shared/data/aclImdb.tar.gz")
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/imdb-lstm"))
    parser.add_argument("--reviews", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--flood-only", action="store_true", help="only part 3")
    parser.add_argument("--server-flag", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.data import load

    texts = load(args.data).test.texts
    reviews = reviews_of_about_230_words(texts, args.reviews, args.seed)
    predict_reviews = random.Random(args.seed).sample(texts, 500)
    say(f"{len(reviews)} reviews of {WORDS_LOW}-{WORDS_HIGH} words; in process first")
    report: dict = {"reviews": len(reviews), "words": [WORDS_LOW, WORDS_HIGH]}
    if not args.flood_only:
        times = in_process_ms(args.model_dir, reviews)
        report["in_process_ms"] = {"p50": statistics.median(times), "p90": percentile(times, 0.9)}
    log_dir = args.out.parent
    log_dir.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    flags = dict(flag.split("=", 1) for flag in args.server_flag)
    report["server_flags"] = flags
    log_path = log_dir / "server.log"
    with start_server(args.model_dir, log_path, http_port=http_port, **flags) as server:
        grpc_explain = grpc_explain_fn(server.target)
        if not args.flood_only:
            say("through the server, one call at a time")
            times = through_server_ms(lambda r: http_explain(http_port, r), reviews)
            report["http_ms"] = {"p50": statistics.median(times), "p90": percentile(times, 0.9)}
            times = through_server_ms(grpc_explain, reviews)
            report["grpc_ms"] = {"p50": statistics.median(times), "p90": percentile(times, 0.9)}
        # Flood callers give up after FLOOD_TIMEOUT_S, as an impatient caller would.
        flood = grpc_explain_fn(server.target, FLOOD_TIMEOUT_S)
        rounds = []
        for index in range(args.rounds):
            say(f"round {index + 1} of {args.rounds}: Predict alone, then under an Explain flood")
            quiet = predict_p99_ms(server.target, predict_reviews, args.round_s, None)
            flooded = predict_p99_ms(server.target, predict_reviews, args.round_s, flood)
            rounds.append(
                {"quiet": quiet, "flood": flooded, "ratio": flooded["p99_ms"] / quiet["p99_ms"]}
            )
        quiet_p99 = statistics.median(r["quiet"]["p99_ms"] for r in rounds)
        flood_p99 = statistics.median(r["flood"]["p99_ms"] for r in rounds)
        report["predict_under_flood"] = {
            "predict_callers": PREDICT_CALLERS,
            "explain_callers": FLOOD_CALLERS,
            "explain_transport": "grpc",
            "rounds": rounds,
            "p99_ms_quiet": quiet_p99,
            "p99_ms_flood": flood_p99,
            "ratio": flood_p99 / quiet_p99,
            "pass": flood_p99 <= 2 * quiet_p99,
        }
    report["pass_150ms"] = all(
        report[k]["p50"] <= 150 for k in ("in_process_ms", "http_ms", "grpc_ms") if k in report
    )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
