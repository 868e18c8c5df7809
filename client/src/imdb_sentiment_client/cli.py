"""The sentiment-client command: parses arguments, calls the client library, sets the exit code.

    sentiment-client predict "A triumph." "Two hours I will never get back."
    sentiment-client predict --file reviews.txt              # one review per line
    sentiment-client predict --jsonl --file reviews.jsonl    # {"id": ..., "text": ...} per line
    sentiment-client stream reviews.txt                      # or `-` (the default) for stdin
    sentiment-client --format table info
    sentiment-client --format table explain "Loved it, but the ending dragged."
    sentiment-client bench --mode stream --input reviews.txt --concurrency 16 --procs 2
    SENTIMENT_TARGET=sentiment:50051 sentiment-client info    # every connection flag has a twin

Output is one JSON object per line ({"id"?, "label", "score"}, or {"id"?, "error"} for a
review the server refused in a stream; explain adds "words", each with its text, span,
status and attribution, and "method"). Reading reviews from a file, it reports its progress
on stderr (reviews done, rate, time left) when stderr is a terminal and stdout is not.
Exit status: 0 done; 1 the service failed, or some reviews of a stream did; 2 bad usage,
settings or input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TextIO

from imdb_sentiment_client.bench import MODES, BenchConfig, run_bench
from imdb_sentiment_client.cli_io import (
    FORMATS,
    InputError,
    ResultWriter,
    format_bench_report,
    read_jsonl,
    read_lines,
)
from imdb_sentiment_client.config import DEFAULT_TARGET, TlsConfig, read_token_file
from imdb_sentiment_client.errors import InvalidReviewError, SentimentError, UnavailableError
from imdb_sentiment_client.progress import Progress, is_terminal
from imdb_sentiment_client.sync_client import SentimentClient

PROG = "sentiment-client"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Reviews per Predict call for --file input: big enough to batch well on the server,
# small enough to stay far below gRPC's 4 MB message limit with long reviews.
DEFAULT_BATCH_SIZE = 64
DEFAULT_TIMEOUT_S = 10.0
# Each connection flag's environment twin, as the server's settings have: a flag beats its
# variable, which beats the default. The client's certificate and key are not
# SENTIMENT_TLS_CERT/KEY, which sentiment-server reads as its own.
ENVIRONMENT = {
    "target": "SENTIMENT_TARGET",
    "timeout": "SENTIMENT_TIMEOUT_S",
    "tls_ca": "SENTIMENT_TLS_CA",
    "tls_cert": "SENTIMENT_TLS_CLIENT_CERT",
    "tls_key": "SENTIMENT_TLS_CLIENT_KEY",
    "token_file": "SENTIMENT_TOKEN_FILE",
    "retry": "SENTIMENT_RETRY",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected on/off, true/false, yes/no or 1/0")


def _non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def connection_defaults(environ: Mapping[str, str]) -> dict[str, object]:
    """Each connection setting's default, or its environment twin's value where one is set.

    Raises InputError naming the variable when a value is bad."""
    defaults: dict[str, object] = {
        "target": DEFAULT_TARGET,
        "timeout": DEFAULT_TIMEOUT_S,
        "tls_ca": None,
        "tls_cert": None,
        "tls_key": None,
        "token_file": None,
        "retry": True,
    }
    parsers = {"timeout": _positive(float), "retry": _boolean}
    for name, variable in ENVIRONMENT.items():
        if variable in environ:
            raw = environ[variable]
            try:
                defaults[name] = parsers.get(name, _non_empty)(raw)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise InputError(f"{variable}={raw!r}: {exc}") from None
    return defaults


def _add_connection_options(
    parser: argparse.ArgumentParser, defaults: Mapping[str, object] | None
) -> None:
    """Options accepted before or after the command; only the top level holds defaults,
    so `--target X predict ...` is not undone by the command's parser."""

    def add(group, flag: str, name: str, help_text: str, **kwargs) -> None:
        default = argparse.SUPPRESS if defaults is None else defaults[name]
        help_text = f"{help_text} [env {ENVIRONMENT[name]}]" if name in ENVIRONMENT else help_text
        group.add_argument(flag, dest=name, default=default, help=help_text, **kwargs)

    group = parser.add_argument_group("connection (a flag beats its environment variable)")
    add(group, "--target", "target", f"server host:port (default {DEFAULT_TARGET})")
    add(
        group,
        "--timeout",
        "timeout",
        f"deadline of each call; for stream, the longest wait for the next result "
        f"(default {DEFAULT_TIMEOUT_S:g})",
        type=_positive(float),
        metavar="S",
    )
    add(group, "--tls-ca", "tls_ca", "CA for TLS", metavar="PEM")
    add(group, "--tls-cert", "tls_cert", "mTLS client certificate", metavar="PEM")
    add(group, "--tls-key", "tls_key", "mTLS client key", metavar="PEM")
    add(group, "--token-file", "token_file", "bearer token to send", metavar="FILE")
    add(
        group,
        "--retry",
        "retry",
        "retry UNAVAILABLE and RESOURCE_EXHAUSTED with backoff within the deadline; "
        "--no-retry fails on the first (default on)",
        action=argparse.BooleanOptionalAction,
    )
    output = parser.add_argument_group("output")
    add(output, "--format", "format", "json lines, or an aligned table", choices=FORMATS)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; connection defaults come from `environ` (os.environ if None)."""
    parser = _Parser(
        prog=PROG,
        description="Sentiment of movie reviews, from a gRPC server. Each connection flag "
        "can also come from the environment variable shown. Reading reviews from a file, "
        "progress goes to stderr when it is a terminal (and stdout is not).",
    )
    defaults = connection_defaults(os.environ if environ is None else environ)
    _add_connection_options(parser, {**defaults, "format": "json"})
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="score reviews with Predict calls")
    _add_connection_options(predict, None)
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="reviews to score")
    predict.add_argument("--file", metavar="F", help="reviews, one per line (- for stdin)")
    predict.add_argument("--jsonl", action="store_true", help='--file holds {"id","text"} lines')
    predict.add_argument(
        "--batch-size",
        type=_positive(int),
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"reviews per call for --file (default {DEFAULT_BATCH_SIZE})",
    )
    predict.set_defaults(run=_predict)

    stream = commands.add_parser("stream", help="score reviews through one StreamPredict call")
    _add_connection_options(stream, None)
    stream.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="default stdin")
    stream.add_argument("--jsonl", action="store_true", help='input holds {"id","text"} lines')
    stream.add_argument(
        "--max-in-flight", type=_positive(int), default=256, metavar="N", help="reviews sent ahead"
    )
    stream.add_argument(
        "--stream-timeout",
        type=_positive(float),
        default=3600.0,
        metavar="S",
        help="whole-stream deadline",
    )
    stream.set_defaults(run=_stream)

    explain = commands.add_parser(
        "explain", help="score reviews and say which words moved each score (Explain)"
    )
    _add_connection_options(explain, None)
    explain.add_argument("texts", nargs="+", metavar="TEXT", help="reviews, one Explain each")
    explain.set_defaults(run=_explain)

    info = commands.add_parser("info", help="describe the model being served")
    _add_connection_options(info, None)
    info.set_defaults(run=_info)

    bench = commands.add_parser("bench", help="load-test the server, in the spirit of ghz")
    _add_connection_options(bench, None)
    bench.add_argument(
        "--mode",
        choices=MODES,
        default="unary",
        help="unary: 1 review per Predict; multi: --reviews-per-request per Predict; "
        "stream: StreamPredict",
    )
    bench.add_argument(
        "--concurrency",
        type=_positive(int),
        default=8,
        metavar="N",
        help="calls (stream: streams) in flight at once, across all --procs",
    )
    bench.add_argument(
        "--duration-s", type=_positive(float), metavar="S", help="how long to run (default 10)"
    )
    bench.add_argument(
        "--requests", type=_positive(int), metavar="N", help="RPCs (stream: reviews)"
    )
    bench.add_argument(
        "--reviews-per-request",
        type=_positive(int),
        default=16,
        metavar="N",
        help="reviews in each Predict of --mode multi",
    )
    bench.add_argument(
        "--stream-window",
        type=_positive(int),
        default=16,
        metavar="N",
        help="reviews each stream keeps in flight in --mode stream",
    )
    bench.add_argument("--input", metavar="FILE", help="real reviews, one per line")
    bench.add_argument(
        "--procs",
        type=_positive(int),
        default=1,
        metavar="N",
        help="load processes sharing --concurrency, so one Python process does not limit it",
    )
    bench.add_argument(
        "--max-duration-s",
        type=_positive(float),
        default=600.0,
        metavar="S",
        help="the longest a --requests run may last",
    )
    bench.add_argument("--json", action="store_true", help="print the result as one JSON object")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `sentiment-client`; returns the exit status."""
    try:
        args = build_parser(environ).parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already reported
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except InputError as exc:  # a bad environment variable
        return _fail(EXIT_USAGE, str(exc))
    try:
        return args.run(args, sys.stdout)
    except UnavailableError as exc:
        return _fail(EXIT_FAILED, f"{exc} (target {args.target})")
    except SentimentError as exc:
        return _fail(EXIT_FAILED, str(exc))
    except InputError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except OSError as exc:  # an unreadable input, certificate or token file
        if isinstance(exc, BrokenPipeError):
            return _stdout_gone()
        return _fail(EXIT_USAGE, f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
    except ValueError as exc:  # a setting the library refused; the message names it
        return _fail(EXIT_USAGE, str(exc))
    except TimeoutError as exc:  # a bench process that never started or finished
        return _fail(EXIT_FAILED, str(exc))
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")


def _security(args: argparse.Namespace) -> tuple[TlsConfig | None, str | None]:
    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        tls = TlsConfig(args.tls_ca, args.tls_cert, args.tls_key)
    return tls, read_token_file(args.token_file) if args.token_file else None


def _client(args: argparse.Namespace) -> SentimentClient:
    tls, token = _security(args)
    settings: dict = {"timeout_s": args.timeout, "tls": tls, "token": token}
    if not args.retry:
        settings["retry"] = None
    if args.command == "stream":
        settings["max_in_flight"] = args.max_in_flight
        settings["stream_timeout_s"] = args.stream_timeout
    return SentimentClient(args.target, **settings)


def _predict(args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.texts) == bool(args.file):
        raise InputError("give reviews as TEXT arguments or with --file, not both or neither")
    if args.jsonl and not args.file:
        raise InputError("--jsonl reads --file; TEXT arguments are plain reviews")
    writer = ResultWriter(out, args.format, with_ids=args.jsonl)
    with (
        _client(args) as client,
        _open_input(args.file) as lines,
        _progress(args.file, args.jsonl, out) as progress,
    ):
        if args.jsonl:
            records = read_jsonl(lines, args.file)
        elif args.file:
            records = ((None, text) for text in read_lines(lines, args.file))
        else:
            records = ((None, text) for text in args.texts)
        first = 1
        for batch in _batches(records, args.batch_size if args.file else len(args.texts)):
            try:
                predictions = client.predict([text for _, text in batch])
            except InvalidReviewError as exc:
                if not args.file:
                    raise
                # The server numbers reviews within its call; say which input lines it held.
                last = first + len(batch) - 1
                raise InvalidReviewError(
                    exc.code, f"{exc.message} (in the call for input reviews {first}-{last})"
                ) from exc
            for (review_id, _), prediction in zip(batch, predictions, strict=True):
                writer.prediction(dataclasses.replace(prediction, id=review_id))
            first += len(batch)
            progress.advance(len(batch))
    return EXIT_OK


def _stream(args: argparse.Namespace, out: TextIO) -> int:
    writer = ResultWriter(out, args.format, with_ids=args.jsonl)
    failed, first_failure, count = 0, "", 0
    with (
        _client(args) as client,
        _open_input(args.file) as lines,
        _progress(args.file, args.jsonl, out) as progress,
    ):
        reviews = read_jsonl(lines, args.file) if args.jsonl else read_lines(lines, args.file)
        for count, result in enumerate(client.stream(reviews), 1):
            writer.stream_result(result)
            out.flush()  # results are a live feed when stdout is a pipe
            progress.advance()
            if not result.ok:
                failed += 1
                where = f"id {result.id}" if result.id is not None else f"review {count}"
                first_failure = first_failure or f"{where}: {result.error}"
    if failed:
        return _fail(EXIT_FAILED, f"{failed} of {count} reviews failed; first, {first_failure}")
    return EXIT_OK


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    writer = ResultWriter(out, args.format)
    with _client(args) as client:
        for text in args.texts:
            writer.explanation(text, client.explain(text))
    return EXIT_OK


def _info(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        ResultWriter(out, args.format).model_info(client.model_info())
    return EXIT_OK


def _bench(args: argparse.Namespace, out: TextIO) -> int:
    tls, token = _security(args)
    config = BenchConfig(
        args.target,
        mode=args.mode,
        concurrency=args.concurrency,
        duration_s=args.duration_s,
        requests=args.requests,
        reviews_per_request=args.reviews_per_request,
        stream_window=args.stream_window,
        procs=args.procs,
        input_path=args.input,
        timeout_s=args.timeout,
        max_duration_s=args.max_duration_s,
        tls=tls,
        token=token,
    )
    result = run_bench(config)
    out.write(json.dumps(result) + "\n" if args.json else format_bench_report(result))
    # A run in which nothing succeeded measured nothing; a few failures under load are data.
    return EXIT_OK if result["rpcs"] else EXIT_FAILED


@contextlib.contextmanager
def _open_input(path: str | None) -> Iterator[TextIO | None]:
    if path is None:
        yield None
    elif path == "-":
        yield sys.stdin
    else:
        with open(path, encoding="utf-8") as file:
            yield file


def _progress(path: str | None, jsonl: bool, out: TextIO) -> Progress:
    """Progress on stderr over a file of reviews, only when stderr is a terminal and the
    results go elsewhere: results printed on the same screen are their own progress."""
    enabled = path is not None and is_terminal(sys.stderr) and not is_terminal(out)
    total = _count_reviews(path, jsonl) if enabled and path != "-" else None
    return Progress("reviews", total, enabled=enabled)


def _count_reviews(path: str, jsonl: bool) -> int | None:
    """Reviews in a file, for the time left: lines (JSON lines: non-blank ones)."""
    try:
        with open(path, "rb") as file:
            return sum(1 for line in file if line.strip() or not jsonl)
    except OSError:
        return None  # reading it for real reports the problem


def _batches(records: Iterator[tuple[str | None, str]], size: int) -> Iterator[list]:
    batch: list = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fail(status: int, message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return status


def _stdout_gone() -> int:
    # The reader left (`... | head`): stop quietly, and keep Python from complaining
    # again when it flushes stdout at exit.
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
