"""deploy/kserve: the InferenceService and its ServingRuntime parse, carry the fields KServe
requires, and agree with the server's own settings and the Open Inference Protocol door."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from server.api.inference_protocol import MODEL_NAME
from server.config import load_config

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "kserve" / "inference-service.yaml"
K8S_DEPLOYMENT = MANIFEST.parents[1] / "k8s" / "deployment.yaml"
# Kubernetes names KServe accepts for an InferenceService: a DNS-1035 label.
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    kinds = [document["kind"] for document in documents]
    assert sorted(kinds) == ["InferenceService", "ServingRuntime"], kinds
    return {document["kind"]: document for document in documents}


@pytest.fixture(scope="module")
def container(manifests) -> dict:
    (only,) = manifests["ServingRuntime"]["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def config(container, tmp_path_factory):
    """The server's settings from the runtime's args and env, as the server would parse them."""
    local_model_dir = tmp_path_factory.mktemp("models")  # the image's model is not here
    argv = [
        f"--model-dir={local_model_dir}" if arg.startswith("--model-dir=") else arg
        for arg in container["args"]
    ]
    environ = {item["name"]: item["value"] for item in container.get("env", [])}
    return load_config(argv, environ)


def test_the_inference_service_has_what_kserve_requires(manifests):
    service = manifests["InferenceService"]
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert DNS_1035_LABEL.fullmatch(service["metadata"]["name"])
    model = service["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2"
    assert model["modelFormat"]["name"]
    # Raw deployment: the pod's two ports (gRPC and HTTP) are served side by side.
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_the_runtime_serves_the_model_format_over_both_v2_doors(manifests):
    runtime = manifests["ServingRuntime"]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    model = manifests["InferenceService"]["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
    assert model["modelFormat"]["name"] in formats
    assert {"v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"])


def test_the_container_is_the_image_with_its_ports_named_as_kserve_expects(container, config):
    # KServe finds the predictor's container by this name.
    assert container["name"] == "kserve-container"
    deployment = yaml.safe_load(K8S_DEPLOYMENT.read_text())
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == server["image"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"h2c": config.port, "http1": config.http_port}
    assert config.host == "[::]" and config.log_format == "json"
    assert config.tls_cert is None and config.auth_token_file is None  # HTTP needs neither


def test_the_probes_are_the_protocols_health_endpoints_on_the_http_port(container, config):
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert config.http_port == 8080
    liveness = container["livenessProbe"]
    # A draining server is live but not ready for up to --grace-s: liveness must outlast it.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > config.grace_s


def test_the_model_dir_is_the_images_and_the_isvc_is_named_for_the_model(manifests, container):
    (model_dir,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--model-dir=")]
    assert model_dir == "/srv/models/imdb-lstm"  # Containerfile: COPY models/imdb-lstm/ there
    # The InferenceService's name is the model's, so /v2/models/<name> reads the same.
    assert manifests["InferenceService"]["metadata"]["name"] == MODEL_NAME
