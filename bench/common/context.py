"""What every measurement step of one run needs, and its progress lines."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common.plan import Plan

_STARTED_S = time.monotonic()


def say(message: str) -> None:
    print(f"bench [{time.monotonic() - _STARTED_S:5.0f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Context:
    plan: Plan
    model_dir: Path
    input_path: Path  # the sample, one review per line, for the load client
    reviews: list[str]
    work_dir: Path  # server logs
    procs: int  # load-client processes for gRPC runs
    # The fixed reference: version 2 (or the served version where there is none), in its own
    # model directory, measured beside the served one.
    reference_dir: Path
    reference_version: int
    test_texts: list[str]  # every test review and its label, for the paths' agreement
    test_labels: list[int]
