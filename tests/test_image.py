"""The container image, run: it serves gRPC, HTTP and metrics as a non-root PID 1, drains on
`podman stop`, and holds no compilers, caches or wheels.

    make test-image     # builds the image (cached), then runs this and test_kube_play.py
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from server.main import SERVICE_NAME
from tests.drain_load import assert_drained, load_then_signal
from tests.podman import (
    IMAGE_USER_ID,
    PODMAN,
    SEED_EXAMPLES,
    SERVING,
    container_state,
    free_ports,
    logs,
    newest_shipped_version,
    podman,
    wait_until_serving,
)

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

MAX_IMAGE_BYTES = 1_500_000_000


@dataclass(frozen=True)
class Container:
    name: str
    grpc_port: int
    http_port: int
    metrics_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def is_running(self) -> bool:
        return container_state(self.name)["Running"]

    def log(self) -> str:
        return logs(self.name)


def start_container(image: str, purpose: str, *flags: str) -> Container:
    """`podman run` of the image on the host's network, on free loopback ports."""
    container = Container(f"sentiment-test-{purpose}-{os.getpid()}", *free_ports(3))
    podman(
        "run", "--detach", "--name", container.name, "--network", "host", image,
        "--host=127.0.0.1", f"--port={container.grpc_port}", f"--http-port={container.http_port}",
        f"--metrics-port={container.metrics_port}", *flags,
    )  # fmt: skip
    return container


def remove(container: Container) -> None:
    podman("rm", "--force", "--time", "0", container.name, check=False)


@pytest.fixture(scope="module")
def serving(container_image):
    container = start_container(container_image, "serve", "--stats-interval-s=0")
    try:
        wait_until_serving(container.target, container.is_running, container.log)
        yield container
    finally:
        remove(container)


def test_health_turns_serving_and_predict_answers_the_seed_examples(serving):
    with grpc.insecure_channel(serving.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            request = health_pb2.HealthCheckRequest(service=service)
            assert health.Check(request, timeout=5).status == SERVING, service
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        reviews = list(SEED_EXAMPLES)
        response = stub.Predict(sentiment_pb2.PredictRequest(reviews=reviews), timeout=30)
        info = stub.GetModelInfo(sentiment_pb2.GetModelInfoRequest(), timeout=5)

    labels = [sentiment_pb2.Label.Name(p.label) for p in response.predictions]
    assert labels == list(SEED_EXAMPLES.values())
    assert {p.model_version for p in response.predictions} == {newest_shipped_version()}
    assert (info.name, info.version) == ("imdb-lstm", newest_shipped_version())


def test_the_demo_page_http_api_and_metrics_answer_on_their_ports(serving):
    base = f"http://127.0.0.1:{serving.http_port}"
    with urllib.request.urlopen(f"{base}/", timeout=10) as page:
        assert page.status == 200 and "IMDB Sentiment Analyzer" in page.read().decode()
    positive = next(iter(SEED_EXAMPLES))
    request = urllib.request.Request(
        f"{base}/predict",
        data=json.dumps({"review": positive}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert json.load(answer)["sentiment"] == "Positive"
    metrics_url = f"http://127.0.0.1:{serving.metrics_port}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as metrics:
        text = metrics.read().decode()
    version = newest_shipped_version()
    assert f'sentiment_model_info{{name="imdb-lstm",version="{version}"}} 1.0' in text
    scored = re.search(r"^sentiment_reviews_scored_total (\S+)$", text, re.MULTILINE)
    assert scored and float(scored.group(1)) >= 1


def test_the_server_is_pid_1_and_not_root(serving):
    command_line = podman("exec", serving.name, "cat", "/proc/1/cmdline").split("\0")
    assert command_line[0].endswith("python3") or command_line[0].endswith("sentiment-server")
    assert any(part.endswith("/sentiment-server") for part in command_line[:2]), command_line
    status = podman("exec", serving.name, "cat", "/proc/1/status")
    (uids,) = re.findall(r"^Uid:\s+(.*)$", status, re.MULTILINE)
    assert {int(uid) for uid in uids.split()} == {IMAGE_USER_ID}  # real, effective, saved, fs


def test_sigterm_drains_the_calls_in_flight_then_the_container_exits_0(container_image):
    container = start_container(
        container_image, "drain", "--grace-s=30", "--stats-interval-s=0", "--poll-s=0"
    )
    stops: list[subprocess.Popen] = []
    try:
        wait_until_serving(container.target, container.is_running, container.log)
        # `podman stop` sends the image's STOPSIGNAL to PID 1, and SIGKILL only after --time.
        stop = [PODMAN, "stop", "--time", "90", container.name]
        load = load_then_signal(container.target, lambda: stops.append(subprocess.Popen(stop)))
        seen = asyncio.run(asyncio.wait_for(load, 180))
        assert stops[0].wait(120) == 0
        assert_drained(seen, container_state(container.name)["ExitCode"], container.log(), 30)
    finally:
        remove(container)


def test_a_stop_while_the_model_loads_ends_the_container_at_once(container_image):
    container = start_container(container_image, "early-stop", "--stats-interval-s=0")
    try:
        deadline_s = time.monotonic() + 120
        while "settings: " not in container.log():  # logged once the start-up handler is in
            assert time.monotonic() < deadline_s, container.log()
            time.sleep(0.1)
        started_s = time.monotonic()
        podman("stop", "--time", "90", container.name, timeout_s=120)
        stopped_in_s = time.monotonic() - started_s
        log = container.log()
        # Ignored, the SIGTERM would have left it to podman's SIGKILL after 90 s.
        assert stopped_in_s < 30, log
        assert container_state(container.name)["ExitCode"] == 130, log
        assert "interrupted during start-up" in log and "serving on" not in log, log
    finally:
        remove(container)


def test_the_image_holds_no_compilers_caches_or_wheels_and_stays_small(container_image):
    size_bytes = int(podman("image", "inspect", "--format", "{{.Size}}", container_image))
    assert size_bytes < MAX_IMAGE_BYTES, f"{size_bytes / 1e9:.2f} GB"
    # Each line the script prints is something the final stage should not hold. The base's own
    # files stay: Debian's python3-venv keeps pip's and setuptools' wheels for ensurepip in
    # /usr/share/python-wheels (the build stage needs them to make the venv).
    findings = podman(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "/bin/sh",
        container_image, "-c",
        "for tool in cc gcc g++ c++ clang make; do command -v $tool; done;"
        "ls -d /root/.cache /home/sentiment/.cache /wheelhouse /opt/venv/bin/pip* 2>/dev/null;"
        "find / -xdev \\( -name '*.whl' -o -name '*.deb' \\) ! -path '/usr/share/python-wheels/*';"
        "find /var/lib/apt/lists /var/cache/apt -type f ! -name lock 2>/dev/null;"
        "true",
    )  # fmt: skip
    assert findings.split() == []


def test_the_image_bakes_in_the_newest_two_versions_and_only_what_the_server_reads(
    container_image,
):
    listing = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", container_image, "-c",
        "cd /srv/models/imdb-lstm && find . -type f | sort",
    )  # fmt: skip
    files = [line.removeprefix("./") for line in listing.split()]
    newest = newest_shipped_version()
    versions = sorted({int(f.split("/")[0]) for f in files})
    assert versions == [newest - 1, newest], ".dockerignore: update its list of older versions"
    assert files == [f"{v}/{name}" for v in versions for name in ("metadata.json", "model.keras")]
