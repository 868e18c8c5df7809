"""`make native-leaks`: which calls leave native memory behind, traced by heaptrack, kind by kind.

    .venv/bin/python -m bench.native_leaks                  # each kind of the soak's mix
    .venv/bin/python -m bench.native_leaks --kinds cancelled short_deadline --requests 15000

The long soak's RSS grows while the Python heap stays flat: native memory. For
each kind of request in the soak's mix (bench.common.soak_load) this starts a fresh
`sentiment-server`, warms it with that kind alone, attaches heaptrack to it
(`heaptrack -p`, through gdb: only allocations made from then on are traced),
sends `--requests` more of that kind, and stops the server (SIGTERM, a drain).
An allocation made while the calls ran and not freed by exit is a leak, as
heaptrack_print reports it; the report gives each kind's leaked bytes per
request and its largest leaking call paths: the bytes each left behind, how
many allocations it made in all (freed or not), and the library or function
that allocated (gRPC's Cython module, numpy's array data, ...). Bytes that stay
alive by design (arrays a cache or a pending collection still holds at exit)
show up too, so a path matters when what it leaves scales with the requests.

Needs heaptrack and gdb (Debian: `apt install heaptrack gdb`). Slow: every
malloc is traced (about 60 traced requests/s here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common.server_proc import ServerProcess
from bench.common.soak_load import MIX, Mix, run_load, synthetic_reviews
from server.config import DEFAULT_MODEL_DIR, ServerConfig

CONCURRENCY = 128
CHANNELS = 4
ATTACH_S = 15.0  # heaptrack injects itself through gdb; calls wait until it has
TOP_SITES = 5
_SITE = re.compile(r"^([\d.]+)([BKMG]?) leaked over (\d+) calls from:?$")
_TOTAL = re.compile(r"^total memory leaked: ([\d.]+)([BKMG]?)$")
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def say(message: str) -> None:
    print(f"native-leaks: {message}", file=sys.stderr, flush=True)


def parse_leaks(text: str) -> dict:
    """heaptrack_print --print-leaks output -> total bytes and the leaking call paths, largest
    first. heaptrack groups them under the allocating frame ("X leaked over N calls from",
    then its library); each call path under it ends "from:"."""
    total = 0.0
    paths: list[dict] = []
    where = "?"
    lines = text.splitlines()
    for index, line in enumerate(lines):
        line = line.strip()
        if found := _TOTAL.match(line):
            total = float(found[1]) * _UNITS[found[2]]
        elif found := _SITE.match(line):
            if not line.endswith(":"):  # an allocating frame: the paths below are its callers
                where = _library(lines[index + 1 : index + 4])
                continue
            paths.append(
                {
                    "bytes": round(float(found[1]) * _UNITS[found[2]]),
                    "allocations": int(found[3]),
                    "where": where,
                }
            )
    paths.sort(key=lambda path: -path["bytes"])
    return {"total_bytes": round(total), "sites": paths}


def _library(following: list[str]) -> str:
    """The library or function a site's first frame is in."""
    for line in following:
        line = line.strip()
        if line.startswith("in "):
            return Path(line[3:]).name
        if line and not line.startswith("0x") and not line.startswith("at "):
            return line.split("(")[0]  # a named function, e.g. PyDataMem_UserNEW
    return "?"


def trace_kind(kind: str, model_dir: Path, work_dir: Path, warm_up: int, requests: int) -> dict:
    defaults = ServerConfig()
    server = ServerProcess(model_dir, work_dir / f"server-{kind}.log", {"log_level": "WARNING"})
    reviews = synthetic_reviews(0)
    mix = Mix(reviews, defaults.max_review_bytes, defaults.max_reviews_per_request, {kind: 1})

    def load(count: int, seed: int) -> float:
        targets = [server.target] * CHANNELS
        tally, elapsed_s, _ = asyncio.run(
            run_load(
                targets,
                mix,
                requests=count,
                concurrency=CONCURRENCY,
                seed=seed,
                max_duration_s=3600,
            )
        )
        if tally.lost or tally.unexpected:
            raise RuntimeError(f"{kind}: {tally.lost} lost, {tally.unexpected} unexpected")
        return elapsed_s

    trace = work_dir / f"heaptrack-{kind}"
    try:
        server.wait_until_serving()
        load(warm_up, 1)
        with open(work_dir / f"heaptrack-{kind}.log", "w") as log:
            heaptrack = subprocess.Popen(
                ["heaptrack", "-o", str(trace), "-p", str(server.process.pid)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(ATTACH_S)
        elapsed_s = load(requests, 2)
    finally:
        exit_code = server.stop()
    heaptrack.wait(600)
    (zst,) = work_dir.glob(f"heaptrack-{kind}*.zst")  # heaptrack adds the extension
    printed = subprocess.run(
        ["heaptrack_print", "-f", str(zst), "--print-leaks", "1", "--print-peaks", "0"]
        + ["--print-allocators", "0", "--print-temporary", "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    leaks = parse_leaks(printed)
    result = {
        "kind": kind,
        "requests": requests,
        "seconds": round(elapsed_s, 1),
        "leaked_bytes": leaks["total_bytes"],
        "leaked_bytes_per_request": round(leaks["total_bytes"] / requests, 1),
        "top_sites": leaks["sites"][:TOP_SITES],
        "server_exit_code": exit_code,
    }
    say(
        f"{kind}: {result['leaked_bytes'] / 1024:.1f} KiB leaked over {requests:,} requests "
        f"({result['leaked_bytes_per_request']} B each)"
    )
    return result


def format_report(results: list[dict]) -> str:
    lines = ["kind            requests  leaked KiB  B/request  largest sites (KiB / allocations)"]
    for r in results:
        sites = "; ".join(
            f"{s['where']} {s['bytes'] / 1024:.1f} / {s['allocations']:,}"
            for s in r["top_sites"][:3]
        )
        lines.append(
            f"{r['kind']:<15} {r['requests']:>8,}  {r['leaked_bytes'] / 1024:>10.1f}  "
            f"{r['leaked_bytes_per_request']:>9}  {sites}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.native_leaks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kinds", nargs="+", choices=sorted(MIX), default=list(MIX))
    parser.add_argument("--warm-up", type=int, default=3_000, help="requests before tracing")
    parser.add_argument("--requests", type=int, default=15_000, help="requests traced, per kind")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--json-out", type=Path, help="also write the report here as JSON")
    parser.add_argument("--work-dir", type=Path, help="traces and logs go here (default: temp)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in ("heaptrack", "heaptrack_print", "gdb") if not shutil.which(tool)]
    if missing:
        print(f"native-leaks: error: {', '.join(missing)} not found on PATH", file=sys.stderr)
        return 2
    if args.requests < 1 or args.warm_up < 0:
        print("native-leaks: error: --requests must be >= 1 and --warm-up >= 0", file=sys.stderr)
        return 2
    if not args.model_dir.is_dir():
        print(
            f"native-leaks: error: --model-dir {args.model_dir} is not a directory", file=sys.stderr
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="native-leaks-") as temp:
        work_dir = args.work_dir or Path(temp)
        work_dir.mkdir(parents=True, exist_ok=True)
        results = [
            trace_kind(kind, args.model_dir, work_dir, args.warm_up, args.requests)
            for kind in args.kinds
        ]
    print(format_report(results))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"kinds": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
