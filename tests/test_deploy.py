"""deploy/k8s: the manifests parse, and their numbers agree with the server's own settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from server.config import load_config
from server.main import SERVICE_NAME

K8S_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
HEALTH_SERVICES = ("", SERVICE_NAME)  # what the server registers with grpc.health.v1


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    """Every document under deploy/k8s by kind (each kind appears once)."""
    documents = [
        document
        for path in sorted(K8S_DIR.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document is not None
    ]
    kinds = [document["kind"] for document in documents]
    assert len(kinds) == len(set(kinds)), kinds
    return {document["kind"]: document for document in documents}


@pytest.fixture(scope="module")
def container(manifests) -> dict:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def config(container, tmp_path_factory):
    """The server's settings from the manifest's args and env, as the server would parse them."""
    local_model_dir = tmp_path_factory.mktemp("models")  # the pod's volume is not here
    argv = [
        f"--model-dir={local_model_dir}" if arg.startswith("--model-dir=") else arg
        for arg in container["args"]
    ]
    environ = {item["name"]: item["value"] for item in container.get("env", [])}
    return load_config(argv, environ)


def test_every_manifest_is_one_of_the_expected_kinds(manifests):
    assert set(manifests) == {"Deployment", "Service", "PersistentVolumeClaim"}


def test_the_grace_period_outlasts_the_drain(manifests, config):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > config.grace_s
    assert config.grace_s == 10  # the one the comments and README talk about


def test_probes_are_native_grpc_health_checks_on_the_serving_port(container, config):
    probes = {name: container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    for name, probe in probes.items():
        assert set(probe) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}, name
        assert probe["grpc"]["port"] == config.port, name
        assert probe["grpc"].get("service", "") in HEALTH_SERVICES, name
    assert probes["readinessProbe"]["grpc"]["service"] == SERVICE_NAME


def test_liveness_never_kills_a_pod_that_is_only_draining(container, config):
    # A draining server reports NOT_SERVING for up to --grace-s.
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > config.grace_s


def test_ports_and_resources_match_the_server(container, config):
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": config.port, "http": config.http_port, "metrics": config.metrics_port}
    assert config.log_format == "json" and config.poll_s > 0 and config.max_connection_age_s > 0
    requests = container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests)
    (model_dir,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--model-dir=")]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert Path(model_dir).is_relative_to(mount["mountPath"]) and mount["readOnly"] is True


def test_the_pod_runs_as_the_images_user_by_number(manifests):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    security = pod["securityContext"]
    # runAsNonRoot can only be checked against a numeric user: the Containerfile's USER.
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    for container in pod["containers"] + pod["initContainers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_an_init_container_seeds_the_claim_the_server_reads(manifests, container):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (seed,) = pod["initContainers"]
    assert seed["image"] == container["image"]  # the image holds the versions it copies
    (seed_mount,) = seed["volumeMounts"]
    (server_mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert seed_mount["mountPath"] == server_mount["mountPath"]
    assert not seed_mount.get("readOnly", False)
    # What it seeds is the server's --model-dir (tests/test_kube_play.py runs it).
    (model_dir,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--model-dir=")]
    assert f"target={model_dir}\n" in seed["args"][0]


def test_the_headless_service_selects_the_pods_on_the_grpc_port(manifests, config):
    service = manifests["Service"]
    template = manifests["Deployment"]["spec"]["template"]
    assert service["metadata"]["name"] == "sentiment-headless"  # the README's DNS name
    assert service["spec"]["clusterIP"] == "None"  # YAML None is the string "None"
    selector = service["spec"]["selector"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert manifests["Deployment"]["spec"]["selector"]["matchLabels"] == selector
    (port,) = service["spec"]["ports"]
    assert port["port"] == config.port and port["targetPort"] == "grpc"


def test_the_pods_mount_the_model_claim(manifests):
    volumes = manifests["Deployment"]["spec"]["template"]["spec"]["volumes"]
    claimed = [volume for volume in volumes if "persistentVolumeClaim" in volume]
    claims = {volume["persistentVolumeClaim"]["claimName"] for volume in claimed}
    assert claims == {manifests["PersistentVolumeClaim"]["metadata"]["name"]}
