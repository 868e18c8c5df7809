"""`sentiment-server` with a model that slows down on a signal: bench.slowdown's server.

    .venv/bin/python -m bench.common.slow_server --batch-ms 2 --review-ms 1 --slow-factor 10 \\
        --model-dir models/imdb-lstm --port 50051       # then: kill -USR1 <pid> / kill -USR2 <pid>

The real model scores every batch; the wrapper then sleeps until the batch has
taken its modelled cost, `batch_ms + review_ms * reviews`, times the current
factor: 1 normally, the slow factor after SIGUSR1, 1 again after SIGUSR2 (a
batch that took the real model longer than that is not slowed further). A
modelled cost makes the experiment much the same on a quiet and a busy machine;
the sleep leaves the CPU free, as a model on a slowed accelerator would.
Every other flag is sentiment-server's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from server.config import load_config
from server.errors import StartupError
from server.main import load_models, serve
from server.observability.logs import configured_logging
from server.observability.malloc import cap_arenas

logger = logging.getLogger("bench.slow_server")

SLOW_SIGNAL = signal.SIGUSR1  # the model turns slow
NORMAL_SIGNAL = signal.SIGUSR2  # and normal again


class SlowableModel:
    """A serving model whose batches take a modelled time, times a factor set at run time."""

    def __init__(self, model, *, batch_ms: float, review_ms: float):
        self._model = model
        self.batch_ms = batch_ms
        self.review_ms = review_ms
        self.factor = 1.0  # set from the signal handler; a float store is atomic

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def predict(self, reviews: list[str]) -> list:
        started_s = time.monotonic()
        results = self._model.predict(reviews)
        took_s = time.monotonic() - started_s
        modelled_s = (self.batch_ms + self.review_ms * len(reviews)) / 1000
        time.sleep(max(0.0, self.factor * modelled_s - took_s))
        return results


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.common.slow_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batch-ms", type=float, default=2.0, help="modelled cost per batch")
    parser.add_argument("--review-ms", type=float, default=1.0, help="modelled cost per review")
    parser.add_argument(
        "--slow-factor", type=float, default=10.0, help="how much slower SIGUSR1 makes it"
    )
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args, server_argv = parse_args(argv)
    try:
        config = load_config(server_argv)
    except StartupError as exc:
        print(f"slow_server: error: {exc}", file=sys.stderr)
        return 2
    with configured_logging(config.log_level, config.log_format):
        logger.info("%s", cap_arenas(config.malloc_arena_max))  # as sentiment-server does
        try:
            model = SlowableModel(
                load_models(config).current, batch_ms=args.batch_ms, review_ms=args.review_ms
            )
        except StartupError as exc:
            logger.error("cannot start: %s", exc)
            return 1

        def set_factor(factor: float) -> None:
            model.factor = factor
            logger.warning("inference now %gx its modelled cost", factor)

        signal.signal(SLOW_SIGNAL, lambda *_: set_factor(args.slow_factor))
        signal.signal(NORMAL_SIGNAL, lambda *_: set_factor(1.0))
        asyncio.run(serve(config, model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
