"""A scriptable fake SentimentService on port 0, to test the client alone (not the real server)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc

MODEL_VERSION = 7


def score(review: str) -> float:
    """A deterministic stand-in for the model: "good" reviews are positive."""
    return 0.9 if "good" in review else 0.1


def prediction(review: str) -> sentiment_pb2.Prediction:
    s = score(review)
    label = sentiment_pb2.POSITIVE if s >= 0.5 else sentiment_pb2.NEGATIVE
    return sentiment_pb2.Prediction(label=label, score=s, model_version=MODEL_VERSION)


@dataclass
class FakeSentimentService(sentiment_pb2_grpc.SentimentServiceServicer):
    """Answers like the real service, with knobs to misbehave.

    stream_batch: answer a stream only after this many requests (or its end), so a
    client that waits for each answer before sending the next review deadlocks.
    reverse_batches: answer each such batch last-first, to test the client's ordering.
    stall_after: stop answering a stream after this many results (but keep it open).
    fail_first: status codes for the first Predict calls, one per call, then succeed.
    """

    stream_batch: int = 1
    reverse_batches: bool = False
    stall_after: int | None = None
    fail_first: list[grpc.StatusCode] = field(default_factory=list)
    predict_calls: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)
    stream_requests: int = 0

    def Predict(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        self.predict_calls += 1
        if self.fail_first:
            context.abort(self.fail_first.pop(0), "scripted failure")
        for index, review in enumerate(request.reviews):
            if not review.strip():
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"review {index} is empty")
        return sentiment_pb2.PredictResponse(predictions=[prediction(r) for r in request.reviews])

    def StreamPredict(self, request_iterator, context):
        self.metadata.append(dict(context.invocation_metadata()))
        answered = 0
        batch: list[sentiment_pb2.StreamPredictRequest] = []

        def answers() -> Iterator[sentiment_pb2.StreamPredictResponse]:
            for request in reversed(batch) if self.reverse_batches else batch:
                if request.review.strip():
                    yield sentiment_pb2.StreamPredictResponse(
                        id=request.id, prediction=prediction(request.review)
                    )
                else:
                    error = sentiment_pb2.Error(code=3, message="review is empty")
                    yield sentiment_pb2.StreamPredictResponse(id=request.id, error=error)

        for request in request_iterator:
            self.stream_requests += 1
            batch.append(request)
            if len(batch) >= self.stream_batch:
                for answer in answers():
                    if self.stall_after is not None and answered >= self.stall_after:
                        while context.is_active():
                            time.sleep(0.01)
                        return
                    answered += 1
                    yield answer
                batch.clear()
        yield from answers()

    def GetModelInfo(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        return sentiment_pb2.ModelInfo(
            name="fake",
            version=MODEL_VERSION,
            maxlen=200,
            vocabulary_size=20000,
            decision_threshold=0.5,
            metrics={"test.accuracy": 0.875},
            preset="tiny",
        )


@contextlib.contextmanager
def serve(
    service: FakeSentimentService, credentials: grpc.ServerCredentials | None = None
) -> Iterator[str]:
    """Runs `service` on 127.0.0.1 port 0 (with TLS given credentials); yields its target."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(service, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_test_pki(directory: Path) -> dict[str, Path]:
    """A throwaway CA with server (127.0.0.1) and client certificates, made with openssl."""
    paths = {name: directory / f"{name}.pem" for name in ("ca", "server", "client")}
    keys = {name: directory / f"{name}.key" for name in paths}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec_key,
        "-keyout",
        str(keys["ca"]),
        "-out",
        str(paths["ca"]),
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    )
    for name in ("server", "client"):
        csr = directory / f"{name}.csr"
        openssl(
            "req", *ec_key, "-keyout", str(keys[name]), "-out", str(csr), "-subj", f"/CN={name}"
        )
        extensions = directory / f"{name}.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(paths["ca"]),
            "-CAkey",
            str(keys["ca"]),
            "-CAcreateserial",
            "-out",
            str(paths[name]),
            "-days",
            "1",
            "-extfile",
            str(extensions),
        )
    return {**paths, **{f"{name}_key": key for name, key in keys.items()}}


def mtls_server_credentials(pki: dict[str, Path]) -> grpc.ServerCredentials:
    """Server credentials that demand a client certificate signed by the test CA."""
    return grpc.ssl_server_credentials(
        [(pki["server_key"].read_bytes(), pki["server"].read_bytes())],
        root_certificates=pki["ca"].read_bytes(),
        require_client_auth=True,
    )
