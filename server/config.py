"""Server settings: each a --flag with a SENTIMENT_* environment twin, checked at start-up.

A flag wins over its environment variable, which wins over the default. Every
bad value is refused before anything loads, naming where it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import ConfigError
from server.observability.logs import LOG_FORMATS

ENV_PREFIX = "SENTIMENT_"
# The shipped model, found from the package so the server runs from any directory.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "imdb-lstm"
DEVICES = ("auto", "cpu", "cpu-keras", "gpu")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
# A setting whose name holds one of these is a secret or a path to one: never logged.
SECRET_NAME_WORDS = ("token", "key", "secret", "password")
REDACTED = "<redacted>"
# Room for the protobuf framing around each review and for the rest of the message.
_PER_REVIEW_OVERHEAD_BYTES = 16
_MESSAGE_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start; built by `load_config` or directly in tests."""

    host: str = "[::]"
    port: int = 50051
    model_dir: Path = DEFAULT_MODEL_DIR
    poll_s: float = 5.0
    device: str = "auto"
    # From `make bench` tuning on 2 CPU cores: at 256 callers 128 serves about 1.4x what 32
    # does and 1.1x 64, alike at 64 callers; 256 adds about 15% more at 256 callers, but a
    # batch then takes about 150 ms instead of 90 and leaves no overlap for loads that keep
    # about 256 reviews in flight (Predict x32, streams), so the default stays at 128.
    max_batch_size: int = 128
    max_delay_ms: float = 5.0
    queue_capacity: int = 1024
    # Refuse a request at once when the work queued ahead would outlast its deadline.
    deadline_admission: bool = True
    # Explain runs one review at a time on its own thread (server/explanations/explain.py); this
    # many may wait or run at once, so a flood of them is refused instead of queuing without end.
    explain_queue_capacity: int = 4
    max_reviews_per_request: int = 256
    max_review_bytes: int = 64 * 1024
    default_timeout_ms: float = 30_000.0
    grace_s: float = 10.0
    max_connection_age_s: float = 0.0
    reflection: bool = True
    metrics_port: int = 0
    http_port: int = 0
    stats_interval_s: float = 60.0
    log_level: str = "INFO"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    log_format: str = "text"
    slow_request_ms: float = 1000.0
    # glibc's default (8 arenas per core). A cap of 2 was measured over 1,000,000 requests
    # (reports/soak/): RSS grew at the same rate, so it is an operator's choice, not a fix.
    malloc_arena_max: int = 0
    # Move start-up's objects out of the cycle collector's full passes
    # (server/observability/heap.py).
    gc_freeze: bool = True
    # Front processes taking calls on the shared ports, beside one model process; 1: a
    # single process, as before; 0: one per core (server/processes/supervisor.py).
    workers: int = 0
    max_calls_per_worker: int = 0
    reuse_port: bool = False
    # auto: uvloop across processes (--workers other than 1) where it is installed (it is
    # with the server); asyncio's own loop in one process, or without uvloop.
    event_loop: str = "auto"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def max_receive_message_bytes(self) -> int:
        """The largest request the server accepts: a full Predict call of maximal reviews.

        Set deliberately (gRPC's default is 4 MiB): big enough for every request
        the limits below allow, so oversize ones fail at the transport, early.
        """
        per_review = self.max_review_bytes + _PER_REVIEW_OVERHEAD_BYTES
        return self.max_reviews_per_request * per_review + _MESSAGE_OVERHEAD_BYTES


@dataclass(frozen=True)
class Setting:
    """One setting: its field, flag, parser from text, check and help."""

    field: str
    parse: Callable[[str], Any]
    check: Callable[[Any], str | None]
    help: str
    choices: Sequence[str] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()

    @property
    def default(self) -> Any:
        return ServerConfig.__dataclass_fields__[self.field].default


def _integer(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("not an integer") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean (use 1/0, true/false, yes/no or on/off)")


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}"


def _one_of(options: Sequence[str]) -> Callable[[Any], str | None]:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}"


def _loop_available(choice: str) -> str | None:
    if choice not in EVENT_LOOPS:
        return f"must be one of {', '.join(EVENT_LOOPS)}"
    if choice == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "is not installed here (pip install uvloop, or choose auto or asyncio)"
    return None


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _existing_dir(value: Path) -> str | None:
    if not value.exists():
        return "does not exist"
    return None if value.is_dir() else "is not a directory"


def _readable_file(value: Path | None) -> str | None:
    """For optional file settings: None (unset) passes; a path must be a readable file."""
    if value is None:
        return None
    if not value.exists():
        return "does not exist"
    if not value.is_file():
        return "is not a file"
    return None if os.access(value, os.R_OK) else "is not readable"


SETTINGS = (
    Setting("host", str, _non_empty, "address to listen on"),
    Setting("port", _integer, _between(0, 65535), "port to listen on; 0 picks a free one"),
    Setting("model_dir", Path, _existing_dir, "model directory; its highest version is served"),
    Setting(
        "poll_s", _number, _between(0, 86_400), "how often to look for new model versions; 0: never"
    ),
    Setting(
        "device",
        str.lower,
        _one_of(DEVICES),
        "where and how the model runs: cpu the XLA fast path, cpu-keras the plain Keras path, "
        "gpu Keras with cuDNN, auto a GPU if TensorFlow sees one, else cpu",
        DEVICES,
    ),
    Setting("max_batch_size", _integer, _between(1, 4096), "most reviews in one model call"),
    Setting(
        "max_delay_ms",
        _number,
        _between(0, 10_000),
        "how long reviews that queued behind a busy model wait for a fuller batch",
    ),
    Setting("queue_capacity", _integer, _between(1, 1_000_000), "most reviews waiting at once"),
    Setting(
        "deadline_admission",
        _boolean,
        lambda _: None,
        "refuse at once a request that the work queued ahead would leave unscored past its "
        "deadline (estimated from recent batches), rather than queue it to expire",
    ),
    Setting(
        "explain_queue_capacity",
        _integer,
        _between(1, 10_000),
        "most Explain calls waiting or running at once (one runs at a time, beside Predict)",
    ),
    Setting(
        "max_reviews_per_request", _integer, _between(1, 100_000), "most reviews in one Predict"
    ),
    Setting(
        "max_review_bytes", _integer, _between(1, 16 * 1024 * 1024), "largest review, in UTF-8"
    ),
    Setting(
        "default_timeout_ms",
        _number,
        _between(1, 3_600_000),
        "deadline for reviews whose caller set none (a caller's shorter one wins)",
    ),
    Setting("grace_s", _number, _between(0, 3600), "time in-flight calls get to finish on stop"),
    Setting(
        "max_connection_age_s",
        _number,
        _between(0, 86_400),
        "close each client connection after this long (calls on it get --grace-s to finish), "
        "so round_robin clients re-resolve DNS and find new replicas; 0: never",
    ),
    Setting("reflection", _boolean, lambda _: None, "serve gRPC reflection"),
    Setting(
        "metrics_port", _integer, _between(0, 65535), "Prometheus /metrics port; 0 turns it off"
    ),
    Setting(
        "http_port",
        _integer,
        _between(0, 65535),
        "HTTP/JSON API and demo page port (POST /predict, GET /); 0 turns it off",
    ),
    Setting("stats_interval_s", _number, _between(0, 86_400), "batcher stats log period; 0: off"),
    Setting("log_level", str.upper, _one_of(LOG_LEVELS), "logging level", LOG_LEVELS),
    Setting("tls_cert", Path, _readable_file, "PEM certificate chain; with --tls-key, serve TLS"),
    Setting("tls_key", Path, _readable_file, "PEM private key of --tls-cert"),
    Setting(
        "tls_client_ca", Path, _readable_file, "PEM CA bundle; clients must show a cert it signed"
    ),
    Setting(
        "auth_token_file",
        Path,
        _readable_file,
        "file holding a token that calls must send as 'authorization: Bearer <token>'",
    ),
    Setting("log_format", str.lower, _one_of(LOG_FORMATS), "json: one object a line", LOG_FORMATS),
    Setting(
        "slow_request_ms",
        _number,
        _between(0, 3_600_000),
        "unary calls slower than this are logged with their request id; 0: off",
    ),
    Setting(
        "malloc_arena_max",
        _integer,
        _between(0, 1024),
        "glibc malloc arenas at most (MALLOC_ARENA_MAX, if set, wins); 0: glibc's default",
    ),
    Setting(
        "gc_freeze",
        _boolean,
        lambda _: None,
        "once the model is loaded, freeze the Python objects alive (gc.freeze) so the cycle "
        "collector's full passes skip them: a pause of a few hundred ms becomes microseconds",
    ),
    Setting(
        "workers",
        _integer,
        _between(0, 256),
        "front processes that take gRPC and HTTP calls on the same ports (SO_REUSEPORT) and "
        "queue their reviews in one model process, which batches for all of them; "
        "1: everything in one process; 0: one front per core",
    ),
    Setting(
        "max_calls_per_worker",
        _integer,
        _between(0, 2**62),
        "with --workers other than 1: replace a front process after it has taken this many "
        "calls, which bounds any memory it gains per call; its successor takes calls first, "
        "then it stops listening and its clients move over as their connections age out "
        "(at most 5 s), so none is lost; 0: never",
    ),
    Setting(
        "reuse_port",
        _boolean,
        lambda _: None,
        "with --workers 1: share the gRPC and HTTP ports with other processes (SO_REUSEPORT), "
        "e.g. several whole servers, each with its own model, on one port; a busy port is "
        "then not refused",
    ),
    Setting(
        "event_loop",
        str.lower,
        _loop_available,
        "the event loop every process runs: uvloop (libuv; across processes, gRPC and HTTP "
        "calls cost less CPU), asyncio (the standard library's), or auto: uvloop with "
        "--workers other than 1 where it is installed, else asyncio",
        EVENT_LOOPS,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentiment-server",
        description="Serves IMDB review sentiment over gRPC, micro-batching reviews "
        "from every caller. Each flag can also come from the environment variable shown.",
    )
    for setting in SETTINGS:
        help_text = f"{setting.help} [env {setting.env}] (default: {str(setting.default)})"
        if setting.parse is _boolean:
            parser.add_argument(
                setting.flag,
                dest=setting.field,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                setting.flag,
                dest=setting.field,
                default=None,
                metavar="|".join(setting.choices) if setting.choices else setting.field.upper(),
                help=help_text,
            )
    return parser


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Flags, then environment, then defaults; raises ConfigError naming any bad value."""
    arguments = build_parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        flag_value = getattr(arguments, setting.field)
        if flag_value is not None:
            source, raw = setting.flag, flag_value
        elif setting.env in environ:
            source, raw = setting.env, environ[setting.env]
        else:
            continue
        values[setting.field] = _parse(setting, source, raw)
    return validate(ServerConfig(**values))


def _parse(setting: Setting, source: str, raw: Any) -> Any:
    if isinstance(raw, bool):  # from --flag/--no-flag, already parsed
        return raw
    try:
        value = setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}={raw!r} is {exc}") from None
    problem = setting.check(value)
    if problem:
        raise ConfigError(f"{source}={raw!r} {problem}")
    return value


def validate(config: ServerConfig) -> ServerConfig:
    """Checks each value and how they fit together; returns the config unchanged."""
    for setting in SETTINGS:
        value = getattr(config, setting.field)
        problem = setting.check(value)
        if problem:
            raise ConfigError(f"{setting.flag} {str(value)} {problem} (env {setting.env})")
    if config.max_reviews_per_request > config.queue_capacity:
        raise ConfigError(
            f"--max-reviews-per-request {config.max_reviews_per_request} exceeds "
            f"--queue-capacity {config.queue_capacity}: a request that large could never be queued"
        )
    if config.max_batch_size > config.queue_capacity:
        raise ConfigError(
            f"--max-batch-size {config.max_batch_size} exceeds --queue-capacity "
            f"{config.queue_capacity}: a full batch could never queue"
        )
    if config.http_port and config.http_port in (config.port, config.metrics_port):
        raise ConfigError(
            f"--http-port {config.http_port} is also the gRPC --port or the --metrics-port: "
            "each listener needs its own port"
        )
    if config.http_port and (config.tls_cert is not None or config.auth_token_file is not None):
        raise ConfigError(
            f"--http-port {config.http_port} serves plaintext HTTP without a token, so it "
            "cannot be combined with --tls-cert or --auth-token-file: that would open a way "
            "around them (put the HTTP API behind a TLS proxy that checks callers instead)"
        )
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError(
            f"--tls-cert {config.tls_cert} and --tls-key {config.tls_key}: TLS needs both "
            "(env SENTIMENT_TLS_CERT, SENTIMENT_TLS_KEY)"
        )
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError(
            f"--tls-client-ca {config.tls_client_ca} needs --tls-cert and --tls-key: "
            "client certificates are checked only over TLS"
        )
    if config.max_receive_message_bytes > 2**31 - 1:
        raise ConfigError(
            f"--max-reviews-per-request {config.max_reviews_per_request} x --max-review-bytes "
            f"{config.max_review_bytes} exceeds gRPC's 2 GiB message limit"
        )
    return config


def redacted_settings(config: Any) -> dict[str, str]:
    """Every setting as text; any whose name says it is a secret (or leads to one) is hidden."""
    return {f.name: _redacted(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)}


def _redacted(name: str, value: Any) -> str:
    if value not in (None, "") and any(word in name.lower() for word in SECRET_NAME_WORDS):
        return REDACTED
    return str(value)


def describe(config: Any) -> str:
    """One line of every setting, secrets redacted, for the start-up log."""
    return " ".join(f"{name}={value}" for name, value in redacted_settings(config).items())
