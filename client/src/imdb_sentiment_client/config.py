"""How a client reaches the server: target, deadlines, stream window, retries, load balancing,
reconnection, TLS and token."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc

DEFAULT_TARGET = "localhost:50051"
SERVICE_NAME = "sentiment.v1.SentimentService"
RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
# gRPC's own load-balancing policies: pick_first sends every call to one address (gRPC's
# default); round_robin keeps a connection to every address the target resolves to and spreads
# calls over the ready ones.
LOAD_BALANCING_POLICIES = ("pick_first", "round_robin")
# gRPC's connection backoff starts at 1 s and grows 1.6x per failed attempt up to 120 s: a
# server gone for a minute may wait half a minute more for its clients to try again, one gone
# for five minutes two. Capped here: an attempt on a dead address every few seconds is cheap.
DEFAULT_MAX_RECONNECT_BACKOFF_S = 5.0
# Started at 0.1 s rather than gRPC's 1 s. When one of several processes sharing a port
# (--workers) dies, the channel reconnects at once, and that first attempt can land in the
# dying process's listen queue and be reset; calls on a channel waiting to reconnect fail at
# once, so with a 1 s wait every retry of a call (RetryPolicy: ~0.7 s in all) failed too.
INITIAL_RECONNECT_BACKOFF_S = 0.1
# gRPC silently clamps maxAttempts to 5; refuse more so the setting means what it says.
MAX_GRPC_ATTEMPTS = 5


def positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's own retries for UNAVAILABLE and RESOURCE_EXHAUSTED, inside the call's deadline.

    gRPC waits a random time in [0, backoff) before each retry (the jitter), the
    backoff growing by `backoff_multiplier` up to `max_backoff_s`, and never past
    the deadline: a call retried to its deadline fails with DEADLINE_EXCEEDED.

    It applies to every method of sentiment.v1. A call whose server dies before
    answering ends UNAVAILABLE although its request may have been read, even
    scored; retrying it is safe because every method only reads (the same
    review gets the same score), which is not true of gRPC services in general.
    gRPC retries only until the server's response headers arrive, which for
    these unary methods come with the answer.

    The defaults (five attempts over about 1.5 s on average, at most 3 s) outlast
    the channel's reconnection to a port whose process was just replaced.
    """

    max_attempts: int = MAX_GRPC_ATTEMPTS
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not (isinstance(self.max_attempts, int) and 2 <= self.max_attempts <= MAX_GRPC_ATTEMPTS):
            raise ValueError(
                f"max_attempts must be an integer from 2 to {MAX_GRPC_ATTEMPTS}, "
                f"got {self.max_attempts!r}"
            )
        positive("initial_backoff_s", self.initial_backoff_s)
        positive("max_backoff_s", self.max_backoff_s)
        positive("backoff_multiplier", self.backoff_multiplier)

    def service_config(self) -> dict:
        """The service config JSON object (gRFC A6) applying this policy to every method."""
        return {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE_NAME}],
                    "retryPolicy": {
                        "maxAttempts": self.max_attempts,
                        "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                        "maxBackoff": f"{self.max_backoff_s:.3f}s",
                        "backoffMultiplier": self.backoff_multiplier,
                        "retryableStatusCodes": list(RETRYABLE_CODES),
                    },
                }
            ]
        }


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the server; with a client certificate and key it is mutual TLS.

    Without `ca_path` the system's root certificates verify the server.
    """

    ca_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_path is None) != (self.key_path is None):
            raise ValueError("a client certificate and its key go together: give both or neither")

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the PEM files; OSError names the file that could not be read."""

        def read(path: str | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_path),
            private_key=read(self.key_path),
            certificate_chain=read(self.cert_path),
        )


def read_token_file(path: str) -> str:
    """The bearer token in a file, without surrounding whitespace; ValueError if empty."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


@dataclass(frozen=True)
class ClientConfig:
    """Every setting of a client, checked once when the client is made.

    `timeout_s` is the deadline of each unary call, and for a stream how long the
    server may owe the next result; `stream_timeout_s` is the deadline of a whole
    stream. `max_in_flight` caps reviews sent on a stream but not yet returned.

    `target` is any gRPC target: `host:port`, `dns:///name:port` (every address
    the name resolves to), or `ipv4:10.0.0.1:50051,10.0.0.2:50051` (these
    addresses). With `load_balancing="round_robin"` calls are spread over all of
    its addresses, and (with `retry`) a call that fails UNAVAILABLE on one is
    retried on another.
    `max_reconnect_backoff_s` caps how long the channel waits between attempts
    to reconnect to an address it lost, so a server that comes back is used
    again within about that time.
    """

    target: str = DEFAULT_TARGET
    timeout_s: float = 10.0
    stream_timeout_s: float = 3600.0
    max_in_flight: int = 256
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    tls: TlsConfig | None = None
    token: str | None = None
    load_balancing: str = "pick_first"
    max_reconnect_backoff_s: float = DEFAULT_MAX_RECONNECT_BACKOFF_S

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target.strip():
            raise ValueError(f"target must be host:port, got {self.target!r}")
        if self.load_balancing not in LOAD_BALANCING_POLICIES:
            raise ValueError(
                f"load_balancing must be one of {', '.join(LOAD_BALANCING_POLICIES)}, "
                f"got {self.load_balancing!r}"
            )
        positive("max_reconnect_backoff_s", self.max_reconnect_backoff_s)
        positive("timeout_s", self.timeout_s)
        positive("stream_timeout_s", self.stream_timeout_s)
        if not (isinstance(self.max_in_flight, int) and self.max_in_flight > 0):
            raise ValueError(
                f"max_in_flight must be a positive integer, got {self.max_in_flight!r}"
            )
        if self.token is not None and (not self.token or any(c in self.token for c in "\r\n")):
            raise ValueError("token must be a non-empty single line")

    def service_config(self) -> dict:
        """The channel's default service config (gRFC A2): load balancing, and the retry policy."""
        config: dict = {"loadBalancingConfig": [{self.load_balancing: {}}]}
        if self.retry is not None:
            config.update(self.retry.service_config())
        return config

    def channel_options(self) -> list[tuple[str, str | int]]:
        max_backoff_ms = max(1, round(self.max_reconnect_backoff_s * 1000))
        # A cap below the start lowers the start too.
        initial_backoff_ms = min(round(INITIAL_RECONNECT_BACKOFF_S * 1000), max_backoff_ms)
        return [
            # On even with retry=None: gRPC's transparent retries re-send only a call the server
            # never received (one a connection's GOAWAY turned away as it aged out), never one it
            # ran; with them off, such a call fails UNAVAILABLE (docs/operating.md, recycling).
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(self.service_config())),
            ("grpc.initial_reconnect_backoff_ms", initial_backoff_ms),
            ("grpc.max_reconnect_backoff_ms", max_backoff_ms),
        ]

    def credentials(self) -> grpc.ChannelCredentials | None:
        return None if self.tls is None else self.tls.credentials()

    def open_channel(self, channels: ModuleType) -> grpc.Channel | grpc.aio.Channel:
        """A channel to `target` made by `channels` (grpc, or grpc.aio for the asyncio client),
        secure when `tls` is set."""
        credentials = self.credentials()
        options = self.channel_options()
        if credentials is None:
            return channels.insecure_channel(self.target, options=options)
        return channels.secure_channel(self.target, credentials, options=options)

    def call_timeout_s(self, value_s: float | None, name: str = "timeout_s") -> float:
        """A call's own deadline setting `name`, checked; this config's `name` when it has none."""
        if value_s is None:
            return getattr(self, name)
        positive(name, value_s)
        return value_s

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent on every call."""
        return () if self.token is None else (("authorization", f"Bearer {self.token}"),)
