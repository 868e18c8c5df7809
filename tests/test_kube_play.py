"""deploy/k8s/, run by `podman kube play` with the image `make image` builds: the init container
seeds the empty model claim, the pod serves what the kubelet's probes ask for, a client reaches
it, and stopping the pod drains it.

What podman does not do, this test does: podman runs no gRPC probes, so the test makes each
probe's call itself (grpc.health.v1 Check on the probe's port and service), as a kubelet
would. Podman ignores the Service.

The manifests are played as written, except for what one machine's podman needs:
- one replica: podman makes every replica a pod, and they would share the host's network;
- free ports for the server's flags and probes (the pod shares the host's network with other
  servers on this machine), and no container `ports` list (podman turns it into port
  mappings, which host networking cannot have; to Kubernetes it is only information);
- a suffix on the Deployment and the volumes, so two runs never share a pod or a volume;
- podman's annotation io.podman.annotations.init.container.type=always, which keeps the init
  container after it ran: podman 4.3 removes a run-once one as it exits, can fail to, and then
  fails the whole play (containers/podman#18477, fixed in 4.6).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imdb_sentiment_client.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc
from tests.podman import (
    IMAGE_USER_ID,
    REPOSITORY,
    SEED_EXAMPLES,
    SERVING,
    container_state,
    free_ports,
    logs,
    newest_shipped_version,
    podman,
    run_podman,
    wait_until_serving,
)

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

K8S_DIR = REPOSITORY / "deploy" / "k8s"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
KEEP_INIT_CONTAINERS = "io.podman.annotations.init.container.type"


def load_manifests() -> list[dict]:
    return [
        document
        for path in sorted(K8S_DIR.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document is not None
    ]


def for_this_machine(documents: list[dict], suffix: str, ports: dict[int, int]) -> list[dict]:
    """The manifests changed as the module's docstring says; `ports` maps each of the
    manifest's ports to a free one."""
    documents = copy.deepcopy(documents)
    kinds = {document["kind"]: document for document in documents}
    kinds["PersistentVolumeClaim"]["metadata"]["name"] += suffix
    deployment = kinds["Deployment"]
    deployment["metadata"]["name"] += suffix
    deployment["spec"]["replicas"] = 1
    # podman 4.3 reads this from the Deployment's own annotations, not its pods'.
    deployment["metadata"].setdefault("annotations", {})[KEEP_INIT_CONTAINERS] = "always"
    pod = deployment["spec"]["template"]["spec"]
    for volume in pod["volumes"]:
        volume["name"] += suffix
        if "persistentVolumeClaim" in volume:
            volume["persistentVolumeClaim"]["claimName"] += suffix
    for container in pod["containers"] + pod.get("initContainers", []):
        for mount in container.get("volumeMounts", []):
            mount["name"] += suffix
    (server,) = pod["containers"]
    for index, arg in enumerate(server["args"]):
        flag, _, value = arg.partition("=")
        if flag in ("--port", "--http-port", "--metrics-port"):
            server["args"][index] = f"{flag}={ports[int(value)]}"
    del server["ports"]
    for probe in PROBES:
        server[probe]["grpc"]["port"] = ports[server[probe]["grpc"]["port"]]
    return documents


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return load_manifests()


@pytest.fixture(scope="module")
def server_spec(manifests) -> dict:
    (deployment,) = [d for d in manifests if d["kind"] == "Deployment"]
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    return server


def test_the_manifests_name_the_image_make_image_builds(container_image, manifests):
    pods = [d["spec"]["template"]["spec"] for d in manifests if d["kind"] == "Deployment"]
    names = {c["image"] for pod in pods for c in pod["containers"] + pod.get("initContainers", [])}
    assert names == {container_image.removeprefix("localhost/")}


@pytest.fixture(scope="module")
def played(container_image, manifests, server_spec, tmp_path_factory):
    """The played pod: yields (names, ports); then takes it down, with its volumes."""
    manifest_ports = [p["containerPort"] for p in server_spec["ports"]]
    ports = dict(zip(manifest_ports, free_ports(len(manifest_ports)), strict=True))
    suffix = f"-test-{os.getpid()}"
    documents = for_this_machine(manifests, suffix, ports)
    path: Path = tmp_path_factory.mktemp("kube") / "sentiment.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (claim,) = [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    pod = f"{deployment['metadata']['name']}-pod-0"  # podman's name for its first replica
    names = {
        "pod": pod,
        "server": f"{pod}-{server_spec['name']}",
        "claim": claim["metadata"]["name"],
    }
    volumes = [v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]]
    try:
        podman("kube", "play", "--network", "host", str(path), timeout_s=300)
        yield names, ports
    finally:
        podman("kube", "down", str(path), check=False, timeout_s=120)
        podman("pod", "rm", "--force", pod, check=False)  # should the play have failed halfway
        podman("volume", "rm", "--force", names["claim"], *volumes, check=False)


@pytest.fixture(scope="module")
def serving(played, server_spec):
    names, ports = played
    grpc_port = ports[server_spec["startupProbe"]["grpc"]["port"]]
    target = f"127.0.0.1:{grpc_port}"
    wait_until_serving(
        target,
        lambda: container_state(names["server"])["Running"],
        lambda: logs(names["server"]),
    )
    return names, ports, target


def test_the_init_container_seeded_the_empty_claim_with_the_baked_in_versions(serving):
    names, _, _ = serving
    mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", names["claim"])
    mountpoint = Path(mountpoint.strip())
    # The image bakes in the newest version and the one before it (tests/test_image.py).
    newest = newest_shipped_version()
    seeded = sorted(p.name for p in (mountpoint / "imdb-lstm").iterdir())
    assert seeded == [str(newest - 1), str(newest)]  # and no staging copies left behind


def test_every_probe_passes_as_the_kubelet_would_run_it(serving, server_spec):
    _, ports, _ = serving
    for name in PROBES:
        probe = server_spec[name]["grpc"]
        with grpc.insecure_channel(f"127.0.0.1:{ports[probe['port']]}") as channel:
            request = health_pb2.HealthCheckRequest(service=probe.get("service", ""))
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=2)
        assert answer.status == SERVING, name


def test_a_client_reaches_the_pod_and_gets_the_newest_shipped_model(serving):
    _, _, target = serving
    with grpc.insecure_channel(target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        response = stub.Predict(sentiment_pb2.PredictRequest(reviews=list(SEED_EXAMPLES)))
    labels = [sentiment_pb2.Label.Name(p.label) for p in response.predictions]
    assert labels == list(SEED_EXAMPLES.values())
    assert {p.model_version for p in response.predictions} == {newest_shipped_version()}


def test_the_pod_runs_as_its_user_on_a_read_only_root_and_model_volume(serving):
    names, _, _ = serving
    status = podman("exec", names["server"], "cat", "/proc/1/status")
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert {int(uid) for uid in uid_line.split()[1:]} == {IMAGE_USER_ID}
    for path in ("/models/imdb-lstm/written-by-the-server", "/written-by-the-server"):
        attempt = run_podman("exec", names["server"], "touch", path)
        assert attempt.returncode != 0 and "Read-only file system" in attempt.stderr, path
    podman("exec", names["server"], "touch", "/tmp/scratch")  # the emptyDir is writable


def test_stopping_the_pod_drains_the_server_and_it_exits_0(serving, server_spec):
    names, _, _ = serving
    grace_s = next(a for a in server_spec["args"] if a.startswith("--grace-s=")).split("=")[1]
    podman("pod", "stop", "--time", "60", names["pod"], timeout_s=120)
    state = container_state(names["server"])
    log = logs(names["server"])
    assert state["ExitCode"] == 0, log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert f"stop requested; draining for up to {float(grace_s):.1f} s" in messages, log
    assert any(m.startswith("stopped; batcher stats:") for m in messages), log
