"""The service's one error tree; the gRPC edge (servicer.status_of) maps it to status codes.

Standard library only, so the batcher and the model can raise these without
knowing anything of gRPC.
"""

from __future__ import annotations

# Standardisation keeps only ASCII word characters (RE2's \w), so text in other scripts,
# emoji or punctuation alone leaves nothing, and an all-padding row must not reach the LSTM.
NO_WORDS = (
    "has no words after removing markup and punctuation (only the letters a-z and digits "
    "count), so there is nothing to score"
)


class ServiceError(Exception):
    """Base of every error a caller of the service can see."""


class InvalidReviewError(ServiceError):
    """One review cannot be scored; `reason` completes the sentence "review N ...".

    The model and the servicer do not know the same things: the model knows
    why a text is unusable, the servicer knows its index or stream id, so the
    reason is kept apart and `for_review` names the review at the edge.
    """

    def __init__(self, reason: str):
        super().__init__(f"review {reason}")
        self.reason = reason

    def for_review(self, name: str) -> str:
        return f"review {name} {self.reason}"


class InvalidRequestError(ServiceError):
    """The request as a whole is unusable (no reviews, too many reviews)."""


class ModelNotFoundError(ServiceError):
    """The request names a model or model version that this server does not serve."""


class QueueFullError(ServiceError):
    """The batcher's queue has no room; the caller should retry after `retry_after_ms`."""

    def __init__(self, message: str, retry_after_ms: int):
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class DeadlineExceededError(ServiceError):
    """The review's deadline passed before it was scored."""


class ShuttingDownError(ServiceError):
    """The server is draining and takes no new work."""


class ExplainUnavailableError(ServiceError):
    """The model version serving cannot be explained (see the server log for why)."""


class InferenceError(ServiceError):
    """The model failed on a whole batch; every review in it gets this error."""


class StartupError(Exception):
    """The server cannot start: a bad setting, a missing model, an absent device."""


class ConfigError(StartupError):
    """A setting has a bad value; the message names the flag or variable and the value."""


class ModelLoadError(StartupError):
    """The model directory or a model version in it cannot be loaded."""
