"""What one `make bench` run measures and for how long: the full plan and the --quick smoke plan."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Plan:
    """Every size and duration of one run; the full plan must finish in 10 minutes on 2 cores."""

    sample_size: int  # real test reviews drawn for the whole run
    limit_s: float  # per batch size and round, in-process
    limit_rounds: int  # sweeps over the batch sizes; the fastest of each size counts
    # In-process batch-1 latency, the c=1 check's reference: one call per review over the
    # sample's first `latency_reviews`, the reviews the c=1 load sends first.
    latency_reviews: int
    # In-process scoring paths (bench/paths.py): per path, batch size and round.
    paths_s: float
    paths_rounds: int
    # Test reviews scored by both paths for the score difference and accuracy; 0: all 25,000.
    agreement_reviews: int
    padding_s: float  # per variant (as served, padded to maxlen)
    load_s: float  # per gRPC load run
    warm_up_s: float  # of unrecorded load on each server before its first measurement
    tuning_load_s: float  # per load run of a tuning candidate, in each round
    tuning_rounds: int  # every candidate takes a turn in each round
    flask_s: float
    concurrencies: tuple[int, ...]  # single-review unary, batching on and off
    # Single-review unary on the reference server (version 2 on the plain Keras path).
    reference_concurrencies: tuple[int, ...]
    c_load_concurrency: int  # h2load's gRPC unary calls in flight
    flask_concurrency: int
    multi_concurrency: int  # Predict calls in flight, each with reviews_per_request
    reviews_per_request: int
    streams: int  # StreamPredict streams at once
    stream_window: int  # reviews each stream keeps in flight
    # (max_batch_size, max_delay_ms) pairs to try besides the server's defaults (always
    # tried), and the loads they are judged at.
    tuning_candidates: tuple[tuple[int, float], ...]
    tuning_concurrencies: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


FULL = Plan(
    sample_size=2000,
    limit_s=2.0,
    limit_rounds=2,
    latency_reviews=1000,
    paths_s=1.0,
    paths_rounds=3,
    agreement_reviews=0,
    padding_s=2.0,
    load_s=10.0,
    warm_up_s=2.0,
    tuning_load_s=3.0,
    tuning_rounds=2,
    flask_s=15.0,
    concurrencies=(1, 8, 64, 256),
    reference_concurrencies=(1, 64),
    c_load_concurrency=64,
    flask_concurrency=8,
    multi_concurrency=8,
    reviews_per_request=32,
    streams=4,
    stream_window=64,
    tuning_candidates=((32, 5.0), (64, 5.0), (128, 5.0), (256, 5.0), (128, 2.0)),
    tuning_concurrencies=(64, 256),
)

# CI's smoke run: every section of the report, each measured for a moment. Never judge its figures.
QUICK = Plan(
    sample_size=200,
    limit_s=0.2,
    limit_rounds=1,
    latency_reviews=20,
    paths_s=0.1,
    paths_rounds=2,
    agreement_reviews=200,
    padding_s=0.2,
    load_s=1.0,
    warm_up_s=0.3,
    tuning_load_s=0.5,
    tuning_rounds=1,
    flask_s=1.0,
    concurrencies=(1, 8, 64),
    reference_concurrencies=(1, 64),
    c_load_concurrency=64,
    flask_concurrency=8,
    multi_concurrency=2,
    reviews_per_request=32,
    streams=2,
    stream_window=16,
    tuning_candidates=(),  # the defaults alone
    tuning_concurrencies=(64,),
)
