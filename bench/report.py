"""results.json -> report.md: the acceptance verdicts first, then every measurement as a table."""

from __future__ import annotations

from bench import doors, protocol_doors
from bench.paths import ratio_by_round

MIB = 1024 * 1024


def _row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header: list[str], rows: list[list]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    return "\n".join(lines + [_row(row) for row in rows])


def _errors(run: dict) -> str:
    if not run["error_count"]:
        return "0"
    return ", ".join(f"{code} {count}" for code, count in run["errors"].items())


def acceptance_table(verdicts: list[dict]) -> str:
    rows = [
        [
            v["name"],
            f"{v['measured']:g}",
            f"{v['comparison']} {v['required']:g}",
            "PASS" if v["passed"] else "FAIL",
            v["detail"],
        ]
        for v in verdicts
    ]
    return _table(["check", "measured", "required", "result", "detail"], rows)


def _load_rows(runs: list[dict]) -> list[list]:
    return [
        [
            run["concurrency"],
            f"{run['reviews_per_s']:.1f}",
            f"{run['rpc_per_s']:.1f}",
            *(f"{run['latency_ms'][k]:.1f}" for k in ("p50", "p90", "p99", "max")),
            run.get("mean_batch_size", "n/a"),
            f"{run['model_busy']:.0%}" if "model_busy" in run else "n/a",
            _errors(run),
        ]
        for run in runs
    ]


_LOAD_HEADER = [
    "concurrency",
    "reviews/s",
    "RPC/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "mean batch",
    "model busy",
    "errors",
]


def _settings(section: dict, defaults: dict) -> str:
    merged = {**defaults, **section["settings"]}
    return ", ".join(f"{key}={value:g}" for key, value in merged.items())


def render(results: dict) -> str:
    meta = results["meta"]
    model, data, machine = meta["model"], meta["data"], meta["machine"]
    limit, padding = results["limit"], results["padding"]
    many, flask, memory = results["many_reviews"], results["seed_flask"], results["memory"]
    tuning = results["tuning"]
    defaults = meta["server_defaults"]
    best = limit["best"]
    latency = limit["batch_1_latency"]
    parts = [
        "# Benchmark: the fast scoring path, micro-batching, and the seed's Flask app",
        "",
        f"{'QUICK SMOKE RUN: the figures below mean nothing. ' if meta['quick'] else ''}"
        f"Run {meta['started_at']} in {meta['elapsed_s']:.0f} s on {machine['cpus']} CPUs "
        f"({machine['platform']}; Python {machine['python']}, TensorFlow "
        f"{machine['tensorflow']}, grpcio {machine['grpcio']}). Model {model['name']} version "
        f"{model['version']} from `{model['source_dir']}` (preset {model['preset'] or '?'}, "
        f"maxlen {model['maxlen']}). "
        f"{data['reviews']} IMDB test reviews drawn with seed {data['seed']} from "
        f"`{data['source']}` (mean {data['mean_words']} words). Load client: "
        f"{meta['client_procs']} process(es) of grpc.aio on the same machine. Ratios between "
        "rows are what this measures; absolute figures on a shared machine are noise.",
        "",
        "## Acceptance",
        "",
        acceptance_table(results["acceptance"]),
        "",
        *_paths_sections(results),
        "## 1. Limit: the serving function in-process",
        "",
        "`ServingModel.predict` (the fast path, the server's default on the CPU) on consecutive "
        "batches of the sample, one call at a time, as the server's inference thread calls it; "
        f"median of {limit['points'][0]['rounds']} rounds, the Keras path taking its turn "
        "beside it. Best up to max_batch_size "
        f"{limit['max_batch_size']}: **{best['reviews_per_s']:.0f} reviews/s at batch "
        f"{best['batch_size']}**. The Keras path groups by length as calibrated at warm-up: a "
        f"time step costs as much as {limit['grouping_cost']['step_overhead_rows']:.0f} rows, "
        f"a call as {limit['grouping_cost']['call_overhead_row_steps']:.0f} row-steps.",
        "",
        _table(
            [
                "batch size",
                "reviews/s",
                "call p50 ms",
                "call p99 ms",
                "calls",
                "Keras path reviews/s",
                "fast / Keras, by round",
            ],
            [
                [
                    p["batch_size"],
                    f"{p['reviews_per_s']:.1f}",
                    f"{p['latency_ms']['p50']:.2f}",
                    f"{p['latency_ms']['p99']:.2f}",
                    p["batches"],
                    f"{k['reviews_per_s']:.1f}",
                    _ratio_text(ratio_by_round(p, k)),
                ]
                for p, k in zip(limit["points"], results["paths"]["sweep"]["keras"], strict=True)
            ],
        ),
        "",
        "Batch-1 latency, the reference of the c=1 check: one call per review over the "
        f"sample's first {latency['batches']} reviews (the ones the c=1 load sends first), "
        f"one pass: p50 {latency['latency_ms']['p50']:.2f} ms, p99 "
        f"{latency['latency_ms']['p99']:.2f} ms.",
        "",
        f"## 2. Micro-batching on ({_settings(results['batching_on'], defaults)})",
        "",
        "Single-review unary `Predict`. Mean batch: reviews per model call; model busy: "
        "the share of the run the model spent inferring; both from the server's Prometheus "
        "metrics over the run.",
        "",
        _table(_LOAD_HEADER, _load_rows(results["batching_on"]["unary"])),
        "",
        *_outside_python(results["batching_on"]),
        f"The reference: version {results['batching_on']['reference']['version']} on the plain "
        "Keras path (`--device cpu-keras`), otherwise the same settings, measured in turns "
        "with the servers above:",
        "",
        _table(_LOAD_HEADER, _load_rows(results["batching_on"]["reference"]["unary"])),
        "",
        f"## 3. Micro-batching off ({_settings(results['batching_off'], defaults)})",
        "",
        _table(_LOAD_HEADER, _load_rows(results["batching_off"]["unary"])),
        "",
        "## 4. Many reviews per request",
        "",
        _table(
            ["load", "reviews/s", "of limit", "p50 ms", "p99 ms", "mean batch", "errors"],
            [
                [
                    label,
                    f"{run['reviews_per_s']:.1f}",
                    f"{run['reviews_per_s'] / best['reviews_per_s']:.0%}",
                    f"{run['latency_ms']['p50']:.1f}",
                    f"{run['latency_ms']['p99']:.1f}",
                    run["mean_batch_size"],
                    _errors(run),
                ]
                for label, run in (
                    (
                        f"Predict x{many['predict_x32']['reviews_per_request']}, "
                        f"{many['predict_x32']['concurrency']} calls in flight",
                        many["predict_x32"],
                    ),
                    (
                        f"StreamPredict, {many['stream']['concurrency']} streams x "
                        f"{many['stream']['stream_window']} reviews in flight",
                        many["stream"],
                    ),
                )
            ],
        ),
        "",
        "Latency here is per call (Predict) or per review (StreamPredict).",
        "",
        "## 5. The seed's way: Flask, one `model.predict` per request",
        "",
        _table(_LOAD_HEADER[:-3] + ["errors"], [_load_rows([flask])[0][:-3] + [_errors(flask)]]),
        "",
        "## 6. Memory (the batching-on server)",
        "",
        _table(
            ["idle RSS", "peak RSS under load", "lifetime peak (VmHWM)"],
            [
                [
                    f"{memory['idle_rss_bytes'] / MIB:.0f} MiB",
                    f"{memory['peak_rss_under_load_bytes'] / MIB:.0f} MiB",
                    f"{memory['lifetime_peak_rss_bytes'] / MIB:.0f} MiB",
                ]
            ],
        ),
        "",
        *protocol_doors.report_lines(results.get("protocol_doors")),
        *doors.report_lines(results.get("doors")),
        "## Padding and grouping by length (the Keras path)",
        "",
        f"The shortest {padding['fraction_of_sample']:.0%} of the sample ({padding['reviews']} "
        f"reviews, mean {padding['tokens_mean']} tokens, longest {padding['tokens_max']}), "
        f"in batches of {padding['batch_size']}: as served (each batch scored in groups of "
        "similar length, each group padded to its own longest review), the whole batch padded "
        f"to its longest review, and every review padded to maxlen {padding['maxlen']}. "
        "Padding is masked: the largest score difference between the three is "
        f"{padding['max_abs_score_diff']:.2e}.",
        "",
        _padding_table(
            [
                ("as served", padding["as_served"]),
                ("padded to the batch's longest", padding["padded_to_longest"]),
                ("padded to maxlen", padding["padded_to_maxlen"]),
            ]
        ),
        "",
        f"On short reviews, as served is **{padding['speedup']}x** the throughput of padding "
        f"to maxlen. On the whole sample ({padding['grouping']['reviews']} reviews, batches of "
        f"{padding['batch_size']}), grouping by length is **{padding['grouping']['speedup']}x** "
        "padding each batch to its longest review:",
        "",
        _padding_table(
            [
                ("as served", padding["grouping"]["as_served"]),
                ("padded to the batch's longest", padding["grouping"]["padded_to_longest"]),
            ]
        ),
        "",
        "## Tuning max_batch_size and max_delay_ms",
        "",
        _tuning(tuning),
        "",
    ]
    return "\n".join(parts)


def _ratio_text(ratio: dict) -> str:
    return f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"


_PATH_LABELS = {
    "fast": "fast path, XLA, chunks on 2 lanes (default on CPU)",
    "fast_1_lane": "fast path, XLA, one lane",
    "keras": "Keras float32 (the plain path; GPUs run it)",
}


def _path_rows(section: dict, agreement: dict | None) -> list[list]:
    sweep, latency = section["sweep"], section["batch_1_latency"]
    rows = []
    for name, points in sweep.items():
        by_size = {p["batch_size"]: p for p in points}
        cells = []
        for size in (1, 32, 128):
            point = by_size.get(size)
            cells.append(
                "n/a"
                if point is None
                else f"{point['reviews_per_s']:.0f} ({point['reviews_per_s_min']:.0f}-"
                f"{point['reviews_per_s_max']:.0f})"
            )
        p50 = latency[name]["p50"] if name in latency else by_size[1]["latency_ms"]["p50"]
        if name == "keras":
            difference = "reference"
        elif agreement is None:
            difference = "n/a"
        else:
            difference = f"{agreement['max_abs_score_diff']:.1e}"
        rows.append([_PATH_LABELS.get(name, name), *cells, f"{p50:.2f}", difference])
    return rows


def _paths_sections(results: dict) -> list[str]:
    paths = results["paths"]
    agreement = paths["agreement"]
    header = [
        "path",
        "batch 1 reviews/s",
        "batch 32 reviews/s",
        "batch 128 reviews/s",
        "batch-1 p50 ms",
        "max score diff",
    ]
    parts = [
        f"## Scoring paths side by side (version {paths['version']})",
        "",
        "`ServingModel.predict` of each path on the same batches of the sample, tokenising "
        "included; the paths take turns at each batch size, in rotating order, over "
        f"{paths['sweep']['fast'][0]['rounds']} rounds: median (min-max over the rounds). "
        "Batch-1 p50: one call per review over the sample's first "
        f"{paths['batch_1_latency']['fast']['reviews']} reviews, the paths alternating review "
        f"by review. Max score diff: against the Keras path over {agreement['reviews']} test "
        f"reviews, where test accuracy is {agreement['accuracy_fast']:.4f} (fast) and "
        f"{agreement['accuracy_keras']:.4f} (Keras) at threshold "
        f"{agreement['decision_threshold']:g}.",
        "",
        _table(header, _path_rows(paths, agreement)),
        "",
    ]
    reference = paths.get("reference")
    if reference:
        parts += [
            f"The fixed reference, version {reference['version']}, measured the same way:",
            "",
            _table(header, _path_rows(reference, None)),
            "",
        ]
    return parts


def _h2load_row(label: str, run: dict, mean_batch: object) -> list:
    return [
        label,
        run["concurrency"],
        f"{run['rpc_per_s']:.1f}",
        f"mean {run['latency_ms']['mean']:.2f}, max {run['latency_ms']['max']:.1f}",
        mean_batch,
        "0" if not run["http_errors"] else f"HTTP {run['http_errors']}",
    ]


def _outside_python(on: dict) -> list[str]:
    http, c_load = on["http"], on.get("h2load")
    lines = [
        "From outside the Python load client: `POST /predict` over HTTP one call at a time "
        "(a keep-alive `http.client` connection), and gRPC unary `Predict` from h2load, "
        "nghttp2's C load generator (HTTP/2 POSTs of one length-prefixed PredictRequest with "
        "`content-type: application/grpc` and `te: trailers`).",
        "",
    ]
    rows = [
        [
            "HTTP POST /predict",
            http["concurrency"],
            f"{http['reviews_per_s']:.1f}",
            f"p50 {http['latency_ms']['p50']:.2f}, p99 {http['latency_ms']['p99']:.2f}",
            http.get("mean_batch_size", "n/a"),
            _errors(http),
        ]
    ]
    if c_load is None:
        lines += ["h2load was not found (Debian package `nghttp2-client`): not measured.", ""]
    else:
        rows.append(
            _h2load_row(
                f"h2load gRPC Predict ({c_load['connections']} connections, one "
                f"{c_load['review_words']}-word review; grpc-status of a sample call: "
                f"{c_load['grpc_status_of_sample']})",
                c_load,
                c_load["mean_batch_size"],
            )
        )
        bare = c_load["bare_grpc"]
        rows.append(
            _h2load_row(
                f"the same h2load calls to a bare grpcio server (no model: `bench/bare_grpc.py`;"
                f" {bare['server_cpu_us_per_call']:.0f} us server CPU a call, h2load "
                f"{bare['client_cpu_us_per_call']:.0f} us)",
                bare,
                "n/a",
            )
        )
    lines += [
        _table(["load", "concurrency", "reviews/s", "latency ms", "mean batch", "errors"], rows),
        "",
    ]
    return lines


def _padding_table(variants: list[tuple[str, dict]]) -> str:
    rows = [
        [
            label,
            f"{p['reviews_per_s']:.1f}",
            f"{p['latency_ms']['p50']:.2f}",
            f"{p['latency_ms']['p99']:.2f}",
        ]
        for label, p in variants
    ]
    return _table(["variant", "reviews/s", "call p50 ms", "call p99 ms"], rows)


def _tuning(tuning: dict) -> str:
    concurrencies = sorted({run["concurrency"] for c in tuning["candidates"] for run in c["unary"]})
    header = ["max_batch_size", "max_delay_ms"]
    for c in concurrencies:
        header += [f"c={c} reviews/s", f"c={c} p99 ms", f"c={c} mean batch"]
    rows = []
    for candidate in tuning["candidates"]:
        by_concurrency = {run["concurrency"]: run for run in candidate["unary"]}
        row = [candidate["max_batch_size"], f"{candidate['max_delay_ms']:g}"]
        for c in concurrencies:
            run = by_concurrency[c]
            row += [
                f"{run['reviews_per_s']:.1f}",
                f"{run['latency_ms']['p99']:.1f}",
                run["mean_batch_size"],
            ]
        rows.append(row)
    chosen, defaults = tuning["chosen"], tuning["defaults"]
    verdict = (
        "the current defaults"
        if chosen == defaults
        else f"not the current defaults ({defaults['max_batch_size']}, "
        f"{defaults['max_delay_ms']:g} ms)"
    )
    return "\n".join(
        [
            _table(header, rows),
            "",
            f"Every candidate ran at once and took a turn in each of {tuning['rounds']} "
            "round(s), so a drift in the machine's load hits all alike; latency is the mean of "
            "the rounds' percentiles. "
            f"Rule: the highest unary throughput at c={concurrencies[-1]}; among pairs within "
            "5% of it, the lowest p99 there. This run picks max_batch_size "
            f"{chosen['max_batch_size']}, max_delay_ms {chosen['max_delay_ms']:g}: {verdict}.",
        ]
    )
