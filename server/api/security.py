"""How the server is secured: TLS credentials from --tls-* files, the interceptors, the log line.

Plaintext without a token is the local default; `describe` says so at start-up
so that nobody runs it that way on an open network by accident. Certificates
and keys are checked with the standard library's ssl module at start-up, so a
bad file is a clear StartupError rather than a failed handshake per call.
Nothing secret (key material, the token) is ever logged.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

import grpc

from server.api.auth import BearerTokenInterceptor, read_token_file
from server.api.decoding import DecodeErrorInterceptor
from server.errors import StartupError


class SecuritySettings(Protocol):
    """The ServerConfig fields this module reads."""

    tls_cert: Path | None
    tls_key: Path | None
    tls_client_ca: Path | None
    auth_token_file: Path | None


def server_credentials(config: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS credentials (mutual TLS with --tls-client-ca), or None for plaintext."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    check_certificate_and_key(config.tls_cert, config.tls_key)
    client_ca = None
    if config.tls_client_ca is not None:
        check_ca_bundle(config.tls_client_ca)
        client_ca = _read(config.tls_client_ca, "--tls-client-ca")
    return grpc.ssl_server_credentials(
        [(_read(config.tls_key, "--tls-key"), _read(config.tls_cert, "--tls-cert"))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def interceptors(config: SecuritySettings) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: authentication before anything else looks at a request."""
    chain: list[grpc.aio.ServerInterceptor] = []
    if config.auth_token_file is not None:
        chain.append(BearerTokenInterceptor(read_token_file(config.auth_token_file)))
    chain.append(DecodeErrorInterceptor())
    return chain


def describe(config: SecuritySettings) -> str:
    """One line for the start-up log: transport and authentication, never a secret."""
    if config.tls_cert is None:
        transport = (
            "plaintext (no TLS): fine on loopback or a private network; "
            "set --tls-cert and --tls-key otherwise"
        )
    elif config.tls_client_ca is None:
        transport = f"TLS with certificate {config.tls_cert}"
    else:
        transport = (
            f"mutual TLS with certificate {config.tls_cert}; client certificates signed by "
            f"{config.tls_client_ca} required"
        )
    if config.auth_token_file is None:
        auth = "no authentication (set --auth-token-file to require a bearer token)"
    else:
        # Not even the token file's path: like the settings line, name no way to a secret.
        auth = "bearer token required (--auth-token-file; the health service stays open)"
    return f"transport: {transport}; {auth}"


def check_certificate_and_key(cert_path: Path, key_path: Path) -> None:
    """StartupError unless the files hold a PEM certificate chain and its matching private key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise StartupError(
            f"--tls-cert {cert_path} and --tls-key {key_path} are not a PEM certificate "
            f"(chain) and its matching private key: {_reason(exc)}"
        ) from None


def check_ca_bundle(ca_path: Path) -> None:
    """StartupError unless the file holds at least one PEM CA certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=str(ca_path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise StartupError(
            f"--tls-client-ca {ca_path} holds no usable PEM CA certificate: {_reason(exc)}"
        ) from None


def _read(path: Path, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read {flag} {path}: {exc.strerror}") from None


def _reason(exc: BaseException) -> str:
    # ssl errors carry a short reason ("PEM_LIB", "KEY_VALUES_MISMATCH"); never file contents.
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
