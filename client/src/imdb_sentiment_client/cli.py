"""The sentiment-client command: parses arguments, calls the client library, sets the exit code.

    sentiment-client predict "A triumph." "Two hours I will never get back."
    sentiment-client predict --file reviews.txt              # one review per line
    sentiment-client predict --jsonl --file reviews.jsonl    # {"id": ..., "text": ...} per line
    sentiment-client stream reviews.txt                      # or `-` (the default) for stdin
    sentiment-client --format table info
    sentiment-client bench --mode stream --input reviews.txt --concurrency 16 --procs 2

Output is one JSON object per line ({"id"?, "label", "score"}, or {"id"?, "error"} for a
review the server refused in a stream). Exit status: 0 done; 1 the service failed, or
some reviews of a stream did; 2 bad usage, settings or input; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
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
from imdb_sentiment_client.sync_client import SentimentClient

PROG = "sentiment-client"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Reviews per Predict call for --file input: big enough to batch well on the server,
# small enough to stay far below gRPC's 4 MB message limit with long reviews.
DEFAULT_BATCH_SIZE = 64


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


def _add_connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Options accepted before or after the command; only the top level holds defaults,
    so `--target X predict ...` is not undone by the command's parser."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    group.add_argument("--target", default=default(DEFAULT_TARGET), help="server host:port")
    group.add_argument(
        "--timeout",
        type=_positive(float),
        default=default(10.0),
        metavar="S",
        help="deadline of each call; for stream, the longest wait for the next result",
    )
    group.add_argument("--format", choices=FORMATS, default=default("json"), help="output")
    group.add_argument("--tls-ca", default=default(None), metavar="PEM", help="CA for TLS")
    group.add_argument("--tls-cert", default=default(None), metavar="PEM", help="mTLS cert")
    group.add_argument("--tls-key", default=default(None), metavar="PEM", help="mTLS key")
    group.add_argument(
        "--token-file", default=default(None), metavar="FILE", help="bearer token to send"
    )
    group.add_argument(
        "--no-retry",
        action="store_true",
        default=default(False),
        help="fail on the first UNAVAILABLE or RESOURCE_EXHAUSTED instead of retrying",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Sentiment of movie reviews, from a gRPC server.")
    _add_connection_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="score reviews with Predict calls")
    _add_connection_options(predict, defaults=False)
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
    _add_connection_options(stream, defaults=False)
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

    info = commands.add_parser("info", help="describe the model being served")
    _add_connection_options(info, defaults=False)
    info.set_defaults(run=_info)

    bench = commands.add_parser("bench", help="load-test the server, in the spirit of ghz")
    _add_connection_options(bench, defaults=False)
    bench.add_argument("--mode", choices=MODES, default="unary", help="unary: 1 review per Predict")
    bench.add_argument("--concurrency", type=_positive(int), default=8, metavar="N")
    bench.add_argument("--duration-s", type=_positive(float), metavar="S", help="default 10")
    bench.add_argument(
        "--requests", type=_positive(int), metavar="N", help="RPCs (stream: reviews)"
    )
    bench.add_argument("--reviews-per-request", type=_positive(int), default=16, metavar="N")
    bench.add_argument("--stream-window", type=_positive(int), default=16, metavar="N")
    bench.add_argument("--input", metavar="FILE", help="real reviews, one per line")
    bench.add_argument("--procs", type=_positive(int), default=1, metavar="N")
    bench.add_argument("--max-duration-s", type=_positive(float), default=600.0, metavar="S")
    bench.add_argument("--json", action="store_true", help="print the result as one JSON object")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `sentiment-client`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already reported
        return exc.code if isinstance(exc.code, int) else EXIT_OK
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
    if args.no_retry:
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
    with _client(args) as client, _open_input(args.file) as lines:
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
    return EXIT_OK


def _stream(args: argparse.Namespace, out: TextIO) -> int:
    writer = ResultWriter(out, args.format, with_ids=args.jsonl)
    failed, first_failure, count = 0, "", 0
    with _client(args) as client, _open_input(args.file) as lines:
        reviews = read_jsonl(lines, args.file) if args.jsonl else read_lines(lines, args.file)
        for count, result in enumerate(client.stream(reviews), 1):
            writer.stream_result(result)
            out.flush()  # results are a live feed when stdout is a pipe
            if not result.ok:
                failed += 1
                where = f"id {result.id}" if result.id is not None else f"review {count}"
                first_failure = first_failure or f"{where}: {result.error}"
    if failed:
        return _fail(EXIT_FAILED, f"{failed} of {count} reviews failed; first, {first_failure}")
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
