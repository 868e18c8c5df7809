"""What the image and Kubernetes tests share: the project's podman wrapper, the image built the
way `make image` builds it, free ports on the host's network, the skip rule, and what the image
must serve.

The tests are skipped only where podman is missing and SENTIMENT_IMAGE_TESTS=required is not
set; .ci/run sets it, so in CI a missing podman is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPOSITORY = Path(__file__).resolve().parents[1]
PODMAN = str(REPOSITORY / "deploy" / "podman" / "podman")
BUILD_SCRIPT = REPOSITORY / "deploy" / "podman" / "build_image.py"
REQUIRED_ENV = "SENTIMENT_IMAGE_TESTS"
SERVING = health_pb2.HealthCheckResponse.SERVING
IMAGE_USER_ID = 10001  # the Containerfile's USER
# The seed project's two examples and the labels it gave them.
SEED_EXAMPLES = {
    "The movie was fantastic and I really enjoyed it": "POSITIVE",
    "The movie was terrible and I absolutely hated it": "NEGATIVE",
}


def newest_shipped_version() -> int:
    """What the image must serve: the highest complete version under models/imdb-lstm."""
    versions = REPOSITORY / "models" / "imdb-lstm"
    return max(
        int(p.name)
        for p in versions.iterdir()
        if p.name.isdigit() and (p / "metadata.json").is_file()
    )


def require_podman() -> None:
    """Skips the calling test where podman is absent, unless the environment requires it."""
    if shutil.which("podman"):
        return
    reason = "podman is not installed (apt-get install podman runc mmdebstrap)"
    if os.environ.get(REQUIRED_ENV) == "required":
        pytest.fail(f"{reason}, and {REQUIRED_ENV}=required")
    pytest.skip(f"{reason}; set {REQUIRED_ENV}=required to make this a failure")


def podman(*args: str, check: bool = True, timeout_s: float = 120) -> str:
    """Runs `podman ARGS` through the project's wrapper; returns its stdout."""
    done = run_podman(*args, timeout_s=timeout_s)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def run_podman(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout_s)


def build_image() -> str:
    """The image of the working tree, as `make image` builds it (cached: seconds when nothing
    changed, so the tests never run an image older than the code); returns its name."""
    done = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600
    )
    assert done.returncode == 0, f"image build failed:\n{done.stdout[-4000:]}\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now; the containers share the host's network with other servers."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def container_state(name: str) -> dict:
    (inspected,) = json.loads(podman("container", "inspect", name))
    return inspected["State"]


def logs(name: str) -> str:
    done = run_podman("logs", name, timeout_s=60)
    return done.stdout + done.stderr


def wait_until_serving(
    target: str, is_running: Callable[[], bool], describe: Callable[[], str], timeout_s: float = 300
) -> None:
    """Polls grpc.health.v1 Check("") on `target` until SERVING; fails with `describe()` if the
    container stops or `timeout_s` passes first."""
    deadline_s = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING:
                    return
            except grpc.RpcError:
                pass  # not listening yet, or NOT_SERVING while the model loads
            assert is_running(), f"the container stopped before serving:\n{describe()}"
            assert time.monotonic() < deadline_s, f"not SERVING in {timeout_s} s:\n{describe()}"
            time.sleep(1)
