"""The Open Inference Protocol (KServe v2) for this model: its tensors, and the checks and
conversions that both doors share (server.api.kserve_grpc, server.api.kserve_http).

Knows neither gRPC nor aiohttp. A door reads its request into an `InferenceRequest`
(BYTES elements as bytes or str, or one input's raw bytes), `infer` checks it, scores its
reviews through the same `score_reviews` as Predict (same limits, same MicroBatcher) and
returns an `InferenceResult`, which the door writes back in its own encoding. Every
message names the input or output, and the element, that was wrong.

The model, as ModelMetadata states it:
    input  "review"  BYTES [-1]   UTF-8 text, one review per element ([N, 1] is taken too)
    output "score"   FP32  [-1]   the model's score, 0 to 1 (as Predict's `score`)
    output "label"   BYTES [-1]   "POSITIVE" or "NEGATIVE" (as Predict's `label`)
Outputs take the input's shape: [N] or [N, 1].
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol

from server.errors import InvalidRequestError, ModelNotFoundError

MODEL_NAME = "imdb-lstm"
SERVER_NAME = "imdb-sentiment-service"
# The framework of the served model: a Keras LSTM, scored by server.scoring.
PLATFORM = "keras"
INPUT = "review"
SCORE = "score"
LABEL = "label"
BYTES = "BYTES"
FP32 = "FP32"
# sentiment.v1's Label names, so both APIs call a review the same.
POSITIVE = "POSITIVE"
NEGATIVE = "NEGATIVE"
# A raw BYTES element: its length as 4 bytes, little-endian, then the bytes (Triton's layout).
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


INPUTS = (TensorMetadata(INPUT, BYTES, (-1,)),)
OUTPUTS = (TensorMetadata(SCORE, FP32, (-1,)), TensorMetadata(LABEL, BYTES, (-1,)))
OUTPUT_NAMES = tuple(output.name for output in OUTPUTS)


class ModelDescription(Protocol):
    """What the protocol reads of the serving model (ModelManager and EngineClient have it)."""

    version: int
    decision_threshold: float


Scorer = Callable[[list[str], float], Awaitable[list[float]]]


@dataclass(frozen=True)
class InputTensor:
    """One input as a door read it: `elements` (bytes from gRPC's bytes_contents or HTTP's
    binary data, anything JSON holds from HTTP), or `raw` (gRPC's raw_input_contents)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    elements: Sequence[Any] = ()
    raw: bytes | None = None


@dataclass(frozen=True)
class InferenceRequest:
    model_name: str
    model_version: str  # "" for whichever serves
    id: str
    inputs: Sequence[InputTensor]
    outputs: Sequence[str] = ()  # requested output names; none: all


@dataclass(frozen=True)
class InferenceResult:
    """The scores of one request, in its order, and what to answer: which outputs, what shape."""

    model_version: int
    shape: tuple[int, ...]
    outputs: tuple[str, ...]
    scores: list[float] = field(repr=False)
    labels: list[str] = field(repr=False)


def server_metadata(extensions: Sequence[str] = ()) -> dict[str, Any]:
    try:
        version = metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    return {"name": SERVER_NAME, "version": version, "extensions": list(extensions)}


def model_metadata(version: int) -> dict[str, Any]:
    return {
        "name": MODEL_NAME,
        "versions": [str(version)],
        "platform": PLATFORM,
        "inputs": [tensor.to_dict() for tensor in INPUTS],
        "outputs": [tensor.to_dict() for tensor in OUTPUTS],
    }


def check_model(name: str, version: str, served_version: int) -> None:
    """ModelNotFoundError unless `name` (and `version`, if given) is what this server serves."""
    if name != MODEL_NAME:
        raise ModelNotFoundError(f'no model "{name}" here; this server serves "{MODEL_NAME}"')
    if version not in ("", str(served_version)):
        raise ModelNotFoundError(
            f'model "{MODEL_NAME}" has no version "{version}" here; version {served_version} '
            "serves (leave the version out for whichever serves)"
        )


async def infer(
    request: InferenceRequest,
    model: ModelDescription,
    score_reviews: Scorer,
    *,
    max_reviews: int,
    timeout_s: float,
) -> InferenceResult:
    """Checks the request, scores its reviews and returns them with what to answer.

    Raises ModelNotFoundError, InvalidRequestError (naming the input or output and the
    element), or whatever ServiceError `score_reviews` raises (queue full, deadline).
    """
    check_model(request.model_name, request.model_version, model.version)
    outputs = requested_outputs(request.outputs)
    reviews, shape = reviews_of(request.inputs, max_reviews)
    try:
        scores = await score_reviews(reviews, timeout_s)
    except InvalidRequestError as error:  # "review 3 is 20000 bytes; ...": which input
        raise InvalidRequestError(f'input "{INPUT}": {error}') from None
    # A VersionedScore names the version that made it; a swap during the call may split
    # the call over two versions: the newer is named, as POST /predict does.
    version = max(getattr(score, "model_version", model.version) for score in scores)
    labels = [
        POSITIVE
        if score >= getattr(score, "decision_threshold", model.decision_threshold)
        else NEGATIVE
        for score in scores
    ]
    return InferenceResult(version, shape, outputs, [float(s) for s in scores], labels)


def requested_outputs(names: Sequence[str]) -> tuple[str, ...]:
    """The outputs to answer, in the model's order; all of them when none is named."""
    for name in names:
        if name not in OUTPUT_NAMES:
            raise InvalidRequestError(f'unknown output "{name}"; {_outputs_text()}')
        if list(names).count(name) > 1:
            raise InvalidRequestError(f'output "{name}" is requested more than once')
    return tuple(n for n in OUTPUT_NAMES if n in names) if names else OUTPUT_NAMES


def reviews_of(inputs: Sequence[InputTensor], max_reviews: int) -> tuple[list[str], tuple]:
    """The reviews of the one input, and its shape ([N] or [N, 1]), or InvalidRequestError."""
    if not inputs:
        raise InvalidRequestError(f"the request has no inputs; {_input_text()}")
    for tensor in inputs:
        if tensor.name != INPUT:
            raise InvalidRequestError(f'unknown input "{tensor.name}"; {_input_text()}')
    if len(inputs) > 1:
        raise InvalidRequestError(f'input "{INPUT}" is given {len(inputs)} times; send it once')
    (tensor,) = inputs
    if tensor.datatype != BYTES:
        raise InvalidRequestError(
            f'input "{INPUT}" has datatype {tensor.datatype or "(none)"}; it must be BYTES '
            "(UTF-8 text, one review per element)"
        )
    count = _review_count(tensor.shape, max_reviews)
    elements = tensor.elements if tensor.raw is None else split_bytes(tensor.raw)
    if len(elements) != count:
        raise InvalidRequestError(
            f'input "{INPUT}" has shape {_shape_text(tensor.shape)}, so {count} element'
            f"{'s' if count != 1 else ''}, but its data holds {len(elements)}"
        )
    return [_review(index, element) for index, element in enumerate(elements)], tensor.shape


def _review_count(shape: Sequence[int], max_reviews: int) -> int:
    shape = tuple(shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] < 0:
        raise InvalidRequestError(
            f'input "{INPUT}" has shape {_shape_text(shape)}; it must be [N] or [N, 1], '
            "one review per element"
        )
    if shape[0] == 0:
        raise InvalidRequestError(f'input "{INPUT}" has shape {_shape_text(shape)}: no reviews')
    if shape[0] > max_reviews:
        raise InvalidRequestError(
            f'input "{INPUT}" holds {shape[0]} reviews; the limit is {max_reviews} a request '
            "(split them over several requests)"
        )
    return shape[0]


def _review(index: int, element: Any) -> str:
    where = f'input "{INPUT}" element {index}'
    if isinstance(element, (bytes, bytearray, memoryview)):
        try:
            text = bytes(element).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError(
                f"{where} is not valid UTF-8: byte {exc.object[exc.start]:#04x} at offset "
                f"{exc.start}"
            ) from None
    elif isinstance(element, str):
        text = element
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON can spell a lone surrogate ("\ud800")
            raise InvalidRequestError(
                f"{where} is not valid Unicode: a lone surrogate at character {exc.start}"
            ) from None
    else:
        raise InvalidRequestError(f"{where} is {json_type(element)}; BYTES elements are text")
    if not text.strip():
        raise InvalidRequestError(f"{where} is empty")
    return text


def split_bytes(raw: bytes) -> list[bytes]:
    """A raw BYTES tensor's elements: each a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidRequestError(
                f'input "{INPUT}" raw contents end inside the 4-byte length of element '
                f"{len(elements)} ({len(raw) - offset} bytes left)"
            )
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + size > len(raw):
            raise InvalidRequestError(
                f'input "{INPUT}" raw contents: element {len(elements)} declares {size} bytes '
                f"but {len(raw) - offset} remain (each element is a 4-byte little-endian "
                "length, then that many bytes)"
            )
        elements.append(raw[offset : offset + size])
        offset += size
    return elements


def join_bytes(elements: Iterable[bytes]) -> bytes:
    """Raw BYTES contents of `elements`, as split_bytes reads them."""
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def raw_fp32(values: Sequence[float]) -> bytes:
    """Raw FP32 contents: little-endian IEEE 754 single precision, in order."""
    return struct.pack(f"<{len(values)}f", *values)


def _input_text() -> str:
    return f'the model takes one BYTES input "{INPUT}" of shape [N] or [N, 1]'


def _outputs_text() -> str:
    return "the model's outputs are " + " and ".join(
        f'"{output.name}" ({output.datatype})' for output in OUTPUTS
    )


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def json_type(value: Any) -> str:
    """A JSON value's kind, for messages: "a number", "null", "an array"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"
