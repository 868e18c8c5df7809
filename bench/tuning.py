"""Tuning: a few (max_batch_size, max_delay_ms) pairs, measured in alternating rounds, and a pick.

Every candidate server runs at once and each takes its turn in every round,
so a change in the machine's load during the run hits all of them alike.
"""

from __future__ import annotations

from bench.common.context import Context, say
from bench.common.server_proc import start_servers
from bench.loads import load, warm_up


def measure_tuning(ctx: Context, defaults: dict) -> dict:
    """Unary throughput and latency for each candidate, the server's defaults among them."""
    plan = ctx.plan
    pairs = [(defaults["max_batch_size"], defaults["max_delay_ms"])]
    pairs = sorted(pairs + [pair for pair in plan.tuning_candidates if pair not in pairs])
    settings = [{"max_batch_size": size, "max_delay_ms": delay} for size, delay in pairs]
    say(f"tuning: {len(pairs)} candidate servers, {plan.tuning_rounds} round(s)")
    logs = {
        ctx.work_dir / f"server-tuning-{size}-{delay:g}.log": s
        for s, (size, delay) in zip(settings, pairs, strict=True)
    }
    rounds: list[dict[int, list[dict]]] = [
        {c: [] for c in plan.tuning_concurrencies} for _ in pairs
    ]
    with start_servers(ctx.model_dir, logs) as servers:
        for server, (size, delay) in zip(servers, pairs, strict=True):
            server.name = f"{size}/{delay:g}ms"
            warm_up(ctx, server)
        for _ in range(plan.tuning_rounds):
            for server, runs in zip(servers, rounds, strict=True):
                for concurrency in plan.tuning_concurrencies:
                    run = load(
                        ctx, server, plan.tuning_load_s, mode="unary", concurrency=concurrency
                    )
                    runs[concurrency].append(run)
    candidates = [
        {**s, "unary": [merge_rounds(runs[c]) for c in plan.tuning_concurrencies]}
        for s, runs in zip(settings, rounds, strict=True)
    ]
    return {
        "candidates": candidates,
        "defaults": defaults,
        "rounds": plan.tuning_rounds,
        "chosen": choose(candidates),
    }


def merge_rounds(runs: list[dict]) -> dict:
    """One load's rounds as one: counts summed, rates over the summed time, and latency
    percentiles, batch size and busy share averaged over the rounds."""
    elapsed_s = sum(run["elapsed_s"] for run in runs)
    errors: dict[str, int] = {}
    for run in runs:
        for code, count in run["errors"].items():
            errors[code] = errors.get(code, 0) + count
    merged = {
        "mode": runs[0]["mode"],
        "concurrency": runs[0]["concurrency"],
        "rounds": len(runs),
        "elapsed_s": round(elapsed_s, 4),
        "rpcs": sum(run["rpcs"] for run in runs),
        "reviews": sum(run["reviews"] for run in runs),
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
    }
    merged["rpc_per_s"] = round(merged["rpcs"] / elapsed_s, 2) if elapsed_s else 0.0
    merged["reviews_per_s"] = round(merged["reviews"] / elapsed_s, 2) if elapsed_s else 0.0
    merged["latency_ms"] = {
        key: round(sum(run["latency_ms"][key] for run in runs) / len(runs), 3)
        for key in runs[0]["latency_ms"]
    }
    for key in ("mean_batch_size", "model_busy"):
        merged[key] = round(sum(run[key] for run in runs) / len(runs), 3)
    return merged


def choose(candidates: list[dict], tolerance: float = 0.05) -> dict:
    """The best pair: top throughput at the highest tuning load; within `tolerance` of it,
    the lowest p99 there (a bigger batch that barely adds throughput is not worth its tail)."""

    def at_top_load(candidate: dict) -> dict:
        return max(candidate["unary"], key=lambda run: run["concurrency"])

    top = max(at_top_load(c)["reviews_per_s"] for c in candidates)
    close = [c for c in candidates if at_top_load(c)["reviews_per_s"] >= (1 - tolerance) * top]
    winner = min(close, key=lambda c: at_top_load(c)["latency_ms"]["p99"])
    return {"max_batch_size": winner["max_batch_size"], "max_delay_ms": winner["max_delay_ms"]}
