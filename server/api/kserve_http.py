"""The Open Inference Protocol's HTTP door: /v2 routes on the HTTP API's port (`--http-port`).

    curl -s localhost:8080/v2/models/imdb-lstm/infer -d '{"inputs": [{"name": "review",
      "datatype": "BYTES", "shape": [1], "data": ["A wonderful film"]}]}'

The routes join HttpApi's application (its drain, body limit and in-flight count
apply) and score through SentimentServicer.score_reviews, as POST /predict does.
Errors are the protocol's {"error": "message"}, with the status of
http_api.http_error_of (400 bad input, 404 unknown model or version, 429, 503, 504).
Tensors travel as JSON, or in Triton's binary tensor data extension, which
tritonclient.http uses by default: the body is the JSON header (its length in the
Inference-Header-Content-Length header), then each binary tensor's bytes in order;
an input says its size in parameters.binary_data_size, and an output asked for with
parameters.binary_data (or every output, with the request's binary_data_output) is
answered the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from server.api import inference_protocol as protocol
from server.api.http_api import http_error_of
from server.api.servicer import ModelDescription, SentimentServicer
from server.errors import InvalidRequestError, ShuttingDownError

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data",)
_Handler = Callable[[web.Request], Any]


class InferenceProtocolHttp:
    """The /v2 routes; `ready()` is the HTTP API's readiness (False once its drain starts)."""

    def __init__(
        self,
        servicer: SentimentServicer,
        model: ModelDescription,
        *,
        max_reviews: int,
        timeout_s: float,
        ready: Callable[[], bool],
    ):
        self._servicer = servicer
        self._model = model
        self._max_reviews = max_reviews
        self._timeout_s = timeout_s
        self._ready = ready

    def routes(self) -> list[web.RouteDef]:
        models = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
        return [
            # The usual call's path, as a plain route: aiohttp finds it by a dictionary look-up
            # (1 us) rather than trying the patterns below in turn (5 us).
            web.post(f"/v2/models/{protocol.MODEL_NAME}/infer", self._answer(self.infer)),
            web.get("/v2", self._answer(self.server_metadata)),
            web.get("/v2/health/live", self._answer(self.live)),
            web.get("/v2/health/ready", self._answer(self.ready)),
            *(web.get(path, self._answer(self.model_metadata)) for path in models),
            *(web.get(path + "/ready", self._answer(self.model_ready)) for path in models),
            *(web.post(path + "/infer", self._answer(self.infer)) for path in models),
        ]

    # -- routes --------------------------------------------------------------------

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(protocol.server_metadata(EXTENSIONS))

    async def live(self, request: web.Request) -> web.Response:
        """200 with an empty body while the process answers (also while draining)."""
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        """200 with an empty body while serving; 503 with the reason once the drain starts."""
        self._refuse_if_draining()
        return web.Response(status=200)

    async def model_metadata(self, request: web.Request) -> web.Response:
        self._check_model(request)
        return web.json_response(protocol.model_metadata(self._model.version))

    async def model_ready(self, request: web.Request) -> web.Response:
        self._check_model(request)
        self._refuse_if_draining()
        return web.Response(status=200)

    async def infer(self, request: web.Request) -> web.Response:
        self._refuse_if_draining()
        self._check_model(request)  # before the body: a wrong URL is named as such
        body = await request.read()  # at most the app's client_max_size, else 413
        header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
        call, binary_outputs = inference_request_of(
            header,
            binary,
            request.match_info.get("model", protocol.MODEL_NAME),
            request.match_info.get("version", ""),
        )
        result = await protocol.infer(
            call,
            self._model,
            self._servicer.score_reviews,
            max_reviews=self._max_reviews,
            timeout_s=self._timeout_s,
        )
        return response_of(result, call.id, binary_outputs)

    # -- helpers -------------------------------------------------------------------

    def _answer(self, handler: _Handler) -> _Handler:
        """`handler` with every error answered as the protocol's {"error": "message"}."""

        async def answered(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except Exception as error:  # a ServiceError, a 413, or a bug http_error_of logs
                found = http_error_of(error)
                return web.json_response(
                    {"error": found.message}, status=found.status, headers=dict(found.headers)
                )

        return answered

    def _check_model(self, request: web.Request) -> None:
        info = request.match_info
        protocol.check_model(
            info.get("model", protocol.MODEL_NAME), info.get("version", ""), self._model.version
        )

    def _refuse_if_draining(self) -> None:
        if not self._ready():
            raise ShuttingDownError("the server is draining and takes no new reviews")


def _split_body(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(the JSON header, parsed; the binary tensor data after it)."""
    if header_length is None:
        json_bytes, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise InvalidRequestError(
                f"{HEADER_LENGTH} is {header_length!r}; it must be the JSON header's size in "
                f"bytes, at most the body's {len(body)}"
            )
        json_bytes, binary = body[:length], body[length:]
    try:
        return json.loads(json_bytes), binary
    except RecursionError:
        raise InvalidRequestError("the body is not valid JSON: it nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None


def inference_request_of(
    body: Any, binary: bytes, model_name: str, model_version: str
) -> tuple[protocol.InferenceRequest, frozenset[str]]:
    """The protocol's plain request from the JSON header and binary data, and which outputs
    to answer in binary."""
    usual = _usual_request(body, binary, model_name, model_version)
    if usual is not None:
        return usual, frozenset()
    body = _object(body, "the body")
    if "inputs" not in body:
        raise InvalidRequestError('the body has no "inputs"')
    inputs = _array(body["inputs"], '"inputs"')
    request_id = body.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidRequestError(f'"id" is {protocol.json_type(request_id)}; it must be text')
    parameters = _object(body.get("parameters", {}), '"parameters"')
    all_binary = parameters.get("binary_data_output") is True
    tensors, offset = [], 0
    for index, item in enumerate(inputs):
        tensor, offset = _input_tensor(_object(item, f"inputs[{index}]"), binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidRequestError(
            f"the body holds {len(binary) - offset} bytes of binary data that no input's "
            "parameters.binary_data_size accounts for"
        )
    outputs, binary_outputs = [], set()
    for index, item in enumerate(_array(body.get("outputs", []), '"outputs"')):
        item = _object(item, f"outputs[{index}]")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidRequestError(f'outputs[{index}] needs a "name" (text)')
        output_parameters = _object(item.get("parameters", {}), f'output "{name}" parameters')
        if "classification" in output_parameters:
            raise InvalidRequestError(
                f'output "{name}" asks for classification, an extension this server lacks; '
                '"label" holds each review\'s class'
            )
        outputs.append(name)
        if output_parameters.get("binary_data", all_binary) is True:
            binary_outputs.add(name)
    if not outputs and all_binary:
        binary_outputs = set(protocol.OUTPUT_NAMES)
    call = protocol.InferenceRequest(model_name, model_version, request_id, tensors, outputs)
    return call, frozenset(binary_outputs)


_USUAL_INPUT_KEYS = {"name", "datatype", "shape", "data"}


def _usual_request(
    body: Any, binary: bytes, model_name: str, model_version: str
) -> protocol.InferenceRequest | None:
    """The usual call, read without the general checks: {"inputs": [one input with "name",
    "datatype", "shape" (integers) and flat text "data", nothing else]}, an optional text "id",
    no binary data. None for anything else, which inference_request_of then reads in full.
    """
    if binary or type(body) is not dict or not 1 <= len(body) <= 2:
        return None
    inputs, request_id = body.get("inputs"), body.get("id", "")
    if type(inputs) is not list or len(inputs) != 1 or type(request_id) is not str:
        return None
    if len(body) == 2 and "id" not in body:
        return None
    (item,) = inputs
    if type(item) is not dict or item.keys() != _USUAL_INPUT_KEYS:
        return None
    name, datatype, shape, data = item["name"], item["datatype"], item["shape"], item["data"]
    if type(name) is not str or type(datatype) is not str or type(data) is not list:
        return None
    if type(shape) is not list or any(type(d) is not int for d in shape):
        return None
    if any(type(element) is not str for element in data):
        return None
    tensor = protocol.InputTensor(name, datatype, tuple(shape), data)
    return protocol.InferenceRequest(model_name, model_version, request_id, [tensor])


def _input_tensor(item: dict, binary: bytes, offset: int) -> tuple[protocol.InputTensor, int]:
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidRequestError('every input needs a "name" (text)')
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidRequestError(f'input "{name}" needs a "datatype" (text): BYTES')
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidRequestError(f'input "{name}" needs a "shape": an array of integers')
    parameters = _object(item.get("parameters", {}), f'input "{name}" parameters')
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise InvalidRequestError(
                f'input "{name}" has no "data" (nor parameters.binary_data_size)'
            )
        data = _array(item["data"], f'input "{name}" "data"')
        return protocol.InputTensor(name, datatype, tuple(shape), _flattened(data)), offset
    if "data" in item:
        raise InvalidRequestError(
            f'input "{name}" has "data" and parameters.binary_data_size; use one or the other'
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidRequestError(f'input "{name}" parameters.binary_data_size must be a size')
    if offset + size > len(binary):
        raise InvalidRequestError(
            f'input "{name}" declares {size} bytes of binary data but {len(binary) - offset} '
            "remain after the JSON header"
        )
    raw = binary[offset : offset + size]
    return protocol.InputTensor(name, datatype, tuple(shape), raw=raw), offset + size


def response_of(
    result: protocol.InferenceResult, request_id: str, binary_outputs: frozenset[str]
) -> web.Response:
    """JSON, or the JSON header then the binary outputs if any output is asked for in binary."""
    if binary_outputs.isdisjoint(result.outputs):
        return web.Response(body=_json_text(result, request_id), content_type="application/json")
    body: dict[str, Any] = {
        "model_name": protocol.MODEL_NAME,
        "model_version": str(result.model_version),
    }
    if request_id:
        body["id"] = request_id
    outputs, chunks = [], []
    for name in result.outputs:
        score = name == protocol.SCORE
        output: dict[str, Any] = {
            "name": name,
            "datatype": protocol.FP32 if score else protocol.BYTES,
            "shape": list(result.shape),
        }
        if name not in binary_outputs:
            output["data"] = result.scores if score else result.labels
        else:
            chunk = (
                protocol.raw_fp32(result.scores)
                if score
                else protocol.join_bytes(label.encode() for label in result.labels)
            )
            output["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        outputs.append(output)
    body["outputs"] = outputs
    header = json.dumps(body).encode()
    return web.Response(
        body=header + b"".join(chunks),
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _json_text(result: protocol.InferenceResult, request_id: str) -> bytes:
    """The all-JSON answer, written out directly: json.dumps of the nested dict cost more
    than the rest of the call's handling (one review a call). Scores are finite floats,
    whose repr is their JSON; labels and names are fixed ASCII words."""
    shape = ",".join(str(d) for d in result.shape)
    outputs = []
    for name in result.outputs:
        if name == protocol.SCORE:
            datatype, data = protocol.FP32, ",".join(repr(s) for s in result.scores)
        else:
            datatype, data = protocol.BYTES, ",".join(f'"{label}"' for label in result.labels)
        outputs.append(
            f'{{"name":"{name}","datatype":"{datatype}","shape":[{shape}],"data":[{data}]}}'
        )
    request = f',"id":{json.dumps(request_id)}' if request_id else ""
    return (
        f'{{"model_name":"{protocol.MODEL_NAME}","model_version":"{result.model_version}"'
        f'{request},"outputs":[{",".join(outputs)}]}}'
    ).encode()


def _flattened(data: list) -> list:
    """Row-major elements of `data`, which the protocol lets nest as the shape does."""
    flat: list = []
    stack = [iter(data)]
    while stack:
        for element in stack[-1]:
            if isinstance(element, list):
                stack.append(iter(element))
                break
            flat.append(element)
        else:
            stack.pop()
    return flat


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what} must be a JSON object, not {protocol.json_type(value)}")
    return value


def _array(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise InvalidRequestError(f"{what} must be an array, not {protocol.json_type(value)}")
    return value
