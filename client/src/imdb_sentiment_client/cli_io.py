"""What the CLI reads (reviews as lines or JSON lines) and writes (JSON lines or a table)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TextIO

from imdb_sentiment_client.errors import SentimentError
from imdb_sentiment_client.types import Explanation, ModelInfo, Prediction, StreamResult

FORMATS = ("json", "table")
# Scores are float32 on the wire; more digits than this would be noise.
SCORE_DIGITS = 6


class InputError(ValueError):
    """Input the CLI cannot read as reviews; the message names the file and line."""


def read_lines(lines: Iterable[str], name: str) -> Iterator[str]:
    """One review per line, newline removed. Blank lines are kept (the server judges them),
    so result N always belongs to line N."""
    read = 0
    try:
        for line in lines:
            read += 1
            yield line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}:{read + 1}: not UTF-8 text ({exc.reason})") from exc


def read_jsonl(lines: Iterable[str], name: str) -> Iterator[tuple[str | None, str]]:
    """(id, text) from lines of {"id": ..., "text": ...}; blank lines are skipped, the id
    (a string or integer) is optional."""
    for lineno, line in enumerate(read_lines(lines, name), 1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f'{where}: expected an object with a string "text"')
        review_id = record.get("id")
        if review_id is not None and (
            isinstance(review_id, bool) or not isinstance(review_id, (str, int))
        ):
            raise InputError(f'{where}: "id" must be a string or an integer')
        yield (None if review_id is None else str(review_id)), record["text"]


# The table of `explain --format table`: how many words it marks, and its longest bar.
STRONGEST_WORDS = 3
BAR_WIDTH = 12


def error_record(error: SentimentError) -> dict:
    return {"code": error.code.name, "message": error.message}


class ResultWriter:
    """Writes results one per line: JSON objects by default, or an aligned table for people."""

    def __init__(self, out: TextIO, fmt: str = "json", *, with_ids: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self._out = out
        self._fmt = fmt
        self._with_ids = with_ids
        self._rows = 0

    def prediction(self, prediction: Prediction) -> None:
        self._row(prediction.id, prediction, None)

    def stream_result(self, result: StreamResult) -> None:
        self._row(result.id, result.prediction, result.error)

    def model_info(self, info: ModelInfo) -> None:
        fields = {
            "name": info.name,
            "version": info.version,
            "preset": info.preset,
            "maxlen": info.maxlen,
            "vocabulary_size": info.vocabulary_size,
            "decision_threshold": round(info.decision_threshold, SCORE_DIGITS),
            "metrics": info.metrics,
        }
        if self._fmt == "json":
            self._out.write(json.dumps(fields) + "\n")
            return
        rows = [(key, str(value)) for key, value in fields.items() if key != "metrics"]
        rows += [(f"metrics.{key}", f"{value:.4f}") for key, value in info.metrics.items()]
        width = max(len(key) for key, _ in rows)
        for key, value in rows:
            self._out.write(f"{key:<{width}}  {value}\n")

    def explanation(self, review: str, explanation: Explanation) -> None:
        """One explained review: a JSON object with every word, or a table marking the
        strongest words (* and a bar of + or - as long as the attribution is strong)."""
        prediction = explanation.prediction
        if self._fmt == "json":
            record = {
                "label": prediction.label,
                "score": round(prediction.score, SCORE_DIGITS),
                "model_version": prediction.model_version,
                "words": [
                    {
                        "text": review[w.start : w.end],
                        "start": w.start,
                        "end": w.end,
                        "token": w.token,
                        "status": w.status,
                        "attribution": None
                        if w.attribution is None
                        else round(w.attribution, SCORE_DIGITS),
                    }
                    for w in explanation.words
                ],
                "method": {
                    "name": explanation.method,
                    "baseline_score": round(explanation.baseline_score, SCORE_DIGITS),
                    "steps": explanation.steps,
                    "convergence_delta": explanation.convergence_delta,
                },
            }
            self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        strongest = {id(w) for w in explanation.strongest(STRONGEST_WORDS)}
        largest = max((abs(w.attribution) for w in explanation.words if w.attribution), default=0)
        self._out.write(
            f"{prediction.label} {prediction.score:.4f} (model version {prediction.model_version}; "
            f"{explanation.method.replace('_', ' ')}, {explanation.steps} steps, attributions "
            f"sum to score - {explanation.baseline_score:.4f} within "
            f"{abs(explanation.convergence_delta):.1e})\n"
        )
        width = min(24, max([len(review[w.start : w.end]) for w in explanation.words] + [4]))
        self._out.write(f"{'#':>4}  {'WORD':<{width}}  {'ATTRIBUTION':>11}\n")
        for number, w in enumerate(explanation.words, 1):
            text = review[w.start : w.end].replace("\n", " ")[:width]
            if w.attribution is None:
                detail = f"{'-':>11}  {w.status.replace('_', ' ')}"
            else:
                share = abs(w.attribution) / largest if largest else 0.0
                bar = ("+" if w.attribution >= 0 else "-") * max(1, round(BAR_WIDTH * share))
                mark = "  * strongest" if id(w) in strongest else ""
                unknown = "  (not in vocabulary)" if w.status == "out_of_vocabulary" else ""
                detail = f"{w.attribution:>+11.4f}  {bar:<{BAR_WIDTH}}{mark}{unknown}"
            self._out.write(f"{number:>4}  {text:<{width}}  {detail}\n")

    def _row(
        self, review_id: str | None, prediction: Prediction | None, error: SentimentError | None
    ) -> None:
        self._rows += 1
        if self._fmt == "json":
            record: dict = {} if review_id is None else {"id": review_id}
            if error is not None:
                record["error"] = error_record(error)
            else:
                assert prediction is not None
                record["label"] = prediction.label
                record["score"] = round(prediction.score, SCORE_DIGITS)
            self._out.write(json.dumps(record) + "\n")
            return
        if self._rows == 1:
            self._out.write(self._table_line("#", "ID", "LABEL", "SCORE"))
        if error is not None:
            verdict, detail = "ERROR", f"{error.code.name}: {error.message}"
        else:
            assert prediction is not None
            verdict, detail = prediction.label, f"{prediction.score:.4f}"
        self._out.write(self._table_line(str(self._rows), review_id or "-", verdict, detail))

    def _table_line(self, number: str, review_id: str, verdict: str, detail: str) -> str:
        id_column = f"{review_id:<16}  " if self._with_ids else ""
        return f"{number:>6}  {id_column}{verdict:<8}  {detail}\n"


def format_bench_report(result: dict) -> str:
    """A bench result (imdb_sentiment_client.bench.run_bench) as a short report for people."""
    config = result["config"]
    latency = result["latency_ms"]
    errors = ", ".join(f"{code} {count}" for code, count in result["errors"].items()) or "none"
    lines = [
        f"target      {config['target']}  mode {config['mode']}, concurrency "
        f"{config['concurrency']} over {config['procs']} process(es)",
        f"elapsed     {result['elapsed_s']:.2f} s",
        f"RPCs        {result['rpcs']} ok  {result['rpc_per_s']:.1f} RPC/s",
        f"reviews     {result['reviews']} ok  {result['reviews_per_s']:.1f} reviews/s",
        "latency ms  "
        + "  ".join(f"{name} {latency[name]:.2f}" for name in ("p50", "p90", "p99", "max")),
        f"errors      {errors}",
    ]
    return "\n".join(lines) + "\n"
