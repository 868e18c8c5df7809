"""The messages between front processes and the model process, and how they are framed.

A frame is a 4-byte little-endian length, then a `marshal`ed tuple whose first item
names the message. marshal reads only plain values (no classes, no code runs on
load) and is the fastest such codec in the standard library: a one-review call
costs two frames each way of a few hundred bytes.

Front -> model process:
    ("predict", call_id, reviews, deadline_s, request_id)   deadline_s: time.monotonic()
    ("cancel", call_id)                                     the caller went away
    ("explain", call_id, review, deadline_s, request_id)
Model process -> front:
    ("model", description)                  on connecting, and whenever a new version serves
    ("scores", call_id, outcomes)           one outcome per review, in order
    ("refused", call_id, error)             the whole call was refused (queue full, late)
    ("explanation", call_id, fields)        or ("refused", call_id, error)

time.monotonic() is CLOCK_MONOTONIC, one clock for every process of a machine, so a
deadline crosses the socket as it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import marshal
import struct

from server.errors import (
    DeadlineExceededError,
    ExplainUnavailableError,
    InferenceError,
    InvalidRequestError,
    InvalidReviewError,
    QueueFullError,
    ServiceError,
    ShuttingDownError,
)

_LENGTH = struct.Struct("<I")
# The fields of the model's description that cross to the fronts (servicer.ModelDescription).
DESCRIBED = (
    "name",
    "version",
    "maxlen",
    "vocabulary_size",
    "decision_threshold",
    "metrics",
    "preset",
)


class ConnectionLost(Exception):
    """The other process closed the socket or sent something unreadable."""


def encode(message: tuple) -> bytes:
    body = marshal.dumps(message)
    return _LENGTH.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> tuple:
    """The next message; ConnectionLost at the end of the stream or on a bad frame."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        message = marshal.loads(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError, EOFError, ValueError, TypeError) as e:
        raise ConnectionLost(str(e) or type(e).__name__) from e
    if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
        raise ConnectionLost(f"not a message: {type(message).__name__}")
    return message


# -- outcomes: a score, or the error that review or call ended with -----------------------

_ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in (
        DeadlineExceededError,
        ExplainUnavailableError,
        InferenceError,
        InvalidRequestError,
        ShuttingDownError,
    )
}


def encode_error(error: BaseException) -> tuple:
    if isinstance(error, QueueFullError):
        return ("QueueFullError", str(error), error.retry_after_ms)
    if isinstance(error, InvalidReviewError):
        return ("InvalidReviewError", error.reason)
    if isinstance(error, ServiceError) and type(error).__name__ in _ERRORS:
        return (type(error).__name__, str(error))
    # A bug in the model process: the caller gets INTERNAL, the model process logged it.
    return ("InferenceError", f"internal error in the model process: {type(error).__name__}")


def decode_error(encoded: tuple) -> ServiceError:
    name = encoded[0]
    if name == "QueueFullError":
        return QueueFullError(encoded[1], retry_after_ms=encoded[2])
    if name == "InvalidReviewError":
        return InvalidReviewError(encoded[1])
    return _ERRORS.get(name, InferenceError)(encoded[1])


def encode_outcome(outcome: object) -> tuple:
    """(score, version, threshold) for a score; ("!", error) for an error."""
    if isinstance(outcome, BaseException):
        return ("!", encode_error(outcome))
    return (
        float(outcome),
        getattr(outcome, "model_version", None),
        getattr(outcome, "decision_threshold", None),
    )


def explanation_fields(explanation) -> dict:
    """An explain.Explanation as plain values (its words as tuples)."""
    fields = {f.name: getattr(explanation, f.name) for f in dataclasses.fields(explanation)}
    fields["words"] = tuple(dataclasses.astuple(w) for w in explanation.words)
    return fields
