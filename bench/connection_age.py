"""Callers without a retry policy while connections age out: gRPC's transparent retries on and off.

    .venv/bin/python -m bench.connection_age --json-out reports/soak/connection-age.json

A front process with recycling on closes each gRPC connection after at most 5 s with a
graceful HTTP/2 GOAWAY (server/processes/retire.py), so its clients move to other fronts.
A call the client sends on a connection in the instant its GOAWAY is on the way is turned
away unread; gRPC's transparent retries (gRFC A6) send it again on a new connection, and
are on by default even without a retry policy. With `grpc.enable_retries=0` they are off,
and such a call fails `UNAVAILABLE` "Stream removed (GOAWAY received ... max_age)". This
runs `--workers 2` with every connection aged out every half second (the race, made
frequent) and single-review `Predict` calls at 32 in flight over 4 channels, the two
channel settings taking turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

from bench.common.server_proc import ServerProcess
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.config import DEFAULT_MODEL_DIR

REVIEW = "A wonderful, moving film with a great cast, though the middle drags a little."
VARIANTS = {"transparent retries on (default)": 1, "grpc.enable_retries=0": 0}
CHANNELS, IN_FLIGHT = 4, 32


async def load(target: str, enable_retries: int, seconds: float) -> tuple[Counter, list[str]]:
    options = [("grpc.enable_retries", enable_retries)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(CHANNELS)]
    stubs = [sentiment_pb2_grpc.SentimentServiceStub(c) for c in channels]
    outcomes: Counter = Counter()
    examples: list[str] = []
    end_s = time.monotonic() + seconds

    async def caller(number: int) -> None:
        stub = stubs[number % CHANNELS]
        while time.monotonic() < end_s:
            try:
                await stub.Predict(sentiment_pb2.PredictRequest(reviews=[REVIEW]), timeout=20)
                outcomes["OK"] += 1
            except grpc.RpcError as error:
                outcomes[error.code().name] += 1
                if len(examples) < 3:
                    examples.append(f"{error.code().name}: {error.details()}")

    await asyncio.gather(*(caller(n) for n in range(IN_FLIGHT)))
    for channel in channels:
        await channel.close()
    return outcomes, examples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.connection_age", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=40.0, help="per variant and round")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    settings = {"workers": 2, "max_calls_per_worker": 20_000, "max_connection_age_s": 0.5}
    rounds = []
    with tempfile.TemporaryDirectory() as work:
        server = ServerProcess(args.model_dir, Path(work) / "server.log", settings)
        try:
            server.wait_until_serving()
            for number in range(args.rounds):
                for name, flag in VARIANTS.items():
                    outcomes, examples = asyncio.run(load(server.target, flag, args.seconds))
                    rounds.append({"round": number, "variant": name,
                                   "outcomes": dict(outcomes), "examples": examples})  # fmt: skip
                    print(f"round {number}, {name}: {dict(outcomes)}", flush=True)
        finally:
            server.stop()
    totals = {
        name: sum((Counter(r["outcomes"]) for r in rounds if r["variant"] == name), Counter())
        for name in VARIANTS
    }
    report = {"server": settings, "in_flight": IN_FLIGHT, "channels": CHANNELS,
              "seconds_per_round": args.seconds, "rounds": rounds,
              "totals": {name: dict(t) for name, t in totals.items()}}  # fmt: skip
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    failed_with_retries = sum(v for k, v in totals[next(iter(VARIANTS))].items() if k != "OK")
    return 1 if failed_with_retries else 0


if __name__ == "__main__":
    sys.exit(main())
