"""Schema test: schemathesis generates requests from the served /openapi.json; none gets a 5xx.

Valid and invalid requests alike (schemathesis' positive and negative modes)
go to a real server with the tiny model; every answer must also match the
document: a documented status, content type and body schema, and a 4xx for
any request the document does not allow.

The hypothesis tests are built here from schemathesis' strategies rather than
by `schemathesis.pytest.from_fixture`, whose lazy loader reads a pytest node
attribute (`_nodeid`) that pytest 9 no longer has.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from server.api.http_api import OPENAPI_PATH
from tests.test_http import free_port

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Only these take a body, so only they have invalid requests to generate.
INPUT_PATHS = (
    "/predict",
    "/explain",
    "/v2/models/{model}/infer",
    "/v2/models/{model}/versions/{version}/infer",
)
OPERATIONS = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in json.loads(OPENAPI_PATH.read_text())["paths"].items()
    for method in item
    for mode in (
        [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        if path in INPUT_PATHS
        else [GenerationMode.POSITIVE]
    )
]


@pytest.fixture(scope="module")
def served_schema(start_server):
    """The document as a real server serves it at /openapi.json, pointing at that server."""
    with start_server(http_port=free_port()) as running:
        port = running.server.http_api.port
        yield schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json", timeout=30)


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_no_request_gets_a_server_error_and_every_answer_matches_the_contract(
    served_schema, method, path, mode
):
    operation = served_schema[path][method]
    answered: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60 if path == "/predict" else 30 if path in INPUT_PATHS else 3,
        deadline=None,  # each example is a real HTTP call to a real model
        derandomize=True,  # the same examples on every run, so a CI failure reproduces
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def every_generated_request(case):
        response = case.call(timeout=30)
        answered.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    every_generated_request()
    assert answered, "schemathesis generated no request"
    if mode is GenerationMode.POSITIVE and path in ("/predict", "/explain"):
        assert 200 in answered, "no generated review was ever scored"
