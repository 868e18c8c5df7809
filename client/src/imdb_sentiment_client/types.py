"""Plain values the client takes and returns (reviews, Prediction, StreamResult, ModelInfo,
Explanation)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from imdb_sentiment_client.errors import ProtocolError, SentimentError, error_for_status
from imdb_sentiment_client.sentiment.v1 import sentiment_pb2

POSITIVE = "POSITIVE"
NEGATIVE = "NEGATIVE"
_LABELS = {sentiment_pb2.POSITIVE: POSITIVE, sentiment_pb2.NEGATIVE: NEGATIVE}

# A review to stream: its text, or an (id, text) pair whose id comes back on its result.
Review = str | tuple[str, str]


@dataclass(frozen=True)
class Prediction:
    """The model's verdict on one review; `score` is the probability it is positive."""

    label: str
    score: float
    model_version: int
    id: str | None = None


@dataclass(frozen=True)
class StreamResult:
    """What a stream returned for one review: a prediction, or the error for that review."""

    id: str | None
    prediction: Prediction | None = None
    error: SentimentError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Prediction:
        """The prediction, or raises the review's error."""
        if self.error is not None:
            raise self.error
        assert self.prediction is not None  # one of the two is always set
        return self.prediction


@dataclass(frozen=True)
class ModelInfo:
    """Which model is serving and how it scored when it was trained."""

    name: str
    version: int
    maxlen: int
    vocabulary_size: int
    decision_threshold: float
    preset: str
    metrics: dict[str, float] = field(default_factory=dict)


# Word statuses: only "scored" and "out_of_vocabulary" words have an attribution.
WORD_STATUSES = {
    sentiment_pb2.WORD_STATUS_SCORED: "scored",
    sentiment_pb2.WORD_STATUS_OUT_OF_VOCABULARY: "out_of_vocabulary",
    sentiment_pb2.WORD_STATUS_BEYOND_MAXLEN: "beyond_maxlen",
    sentiment_pb2.WORD_STATUS_REMOVED: "removed",
}


@dataclass(frozen=True)
class Word:
    """One word of an explained review: `review[start:end]` (code points, as Python slices).

    `attribution` is its signed share of score - baseline_score (above 0: towards
    POSITIVE), None for a word the model never saw ("beyond_maxlen", "removed").
    """

    start: int
    end: int
    token: str | None
    status: str
    attribution: float | None


@dataclass(frozen=True)
class Explanation:
    """Explain's answer: the prediction, every word in order, and how it was computed.

    Integrated gradients from `baseline_score`, with `steps` quadrature nodes;
    `convergence_delta` (sum of attributions - (score - baseline_score)) is the
    method's own error.
    """

    prediction: Prediction
    words: tuple[Word, ...]
    method: str
    baseline: str
    baseline_score: float
    steps: int
    convergence_delta: float

    def strongest(self, count: int = 3) -> list[Word]:
        """The `count` words with the largest attributions, either sign, strongest first."""
        attributed = [w for w in self.words if w.attribution is not None]
        return sorted(attributed, key=lambda w: abs(w.attribution), reverse=True)[:count]


def review_list(texts: Iterable[str]) -> list[str]:
    """The reviews of a Predict call as a list; TypeError for a bare string or a non-string."""
    if isinstance(texts, (str, bytes)):
        # A bare string would otherwise be scored one character at a time.
        raise TypeError("predict takes a list of reviews; wrap a single review in a list")
    reviews = list(texts)
    for index, text in enumerate(reviews):
        if not isinstance(text, str):
            raise TypeError(f"review {index} is a {type(text).__name__}, not a str")
    return reviews


def single_review(text: str) -> str:
    """The review of an Explain call; TypeError for anything but a str."""
    if not isinstance(text, str):
        raise TypeError(f"explain takes one review as a str, not a {type(text).__name__}")
    return text


def split_review(item: Review) -> tuple[str | None, str]:
    """(caller id or None, text) for one stream input; TypeError says what was wrong."""
    if isinstance(item, str):
        return None, item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
        return (None if item[0] is None else str(item[0])), item[1]
    raise TypeError(f"a review must be a str or an (id, text) pair, not {item!r:.80}")


def prediction_from_proto(message: sentiment_pb2.Prediction, id: str | None = None) -> Prediction:
    label = _LABELS.get(message.label)
    if label is None:
        raise ProtocolError(f"prediction without a label (label={message.label})")
    return Prediction(label, float(message.score), int(message.model_version), id)


def predictions_from_proto(
    message: sentiment_pb2.PredictResponse, expected: int
) -> list[Prediction]:
    if len(message.predictions) != expected:
        raise ProtocolError(
            f"sent {expected} reviews but got {len(message.predictions)} predictions back"
        )
    return [prediction_from_proto(p) for p in message.predictions]


def stream_result_from_proto(
    message: sentiment_pb2.StreamPredictResponse, id: str | None
) -> StreamResult:
    """The result for one stream response; `id` is the caller's id, not the wire id."""
    kind = message.WhichOneof("result")
    if kind == "prediction":
        return StreamResult(id, prediction=prediction_from_proto(message.prediction, id))
    if kind == "error":
        return StreamResult(id, error=error_for_status(message.error.code, message.error.message))
    raise ProtocolError(f"stream response {message.id!r} has neither a prediction nor an error")


def explanation_from_proto(message: sentiment_pb2.ExplainResponse, review: str) -> Explanation:
    """The Explanation for `review`; ProtocolError if a span does not fit it."""
    words = []
    for word in message.words:
        status = WORD_STATUSES.get(word.status)
        if status is None or not 0 <= word.start <= word.end <= len(review):
            raise ProtocolError(
                f"word {word.token!r} has status {word.status} and span "
                f"[{word.start}, {word.end}) in a review of {len(review)} characters"
            )
        attribution = float(word.attribution) if word.HasField("attribution") else None
        words.append(Word(word.start, word.end, word.token or None, status, attribution))
    method = message.method
    return Explanation(
        prediction=prediction_from_proto(message.prediction),
        words=tuple(words),
        method=method.name,
        baseline=method.baseline,
        baseline_score=float(method.baseline_score),
        steps=int(method.steps),
        convergence_delta=float(method.convergence_delta),
    )


def model_info_from_proto(message: sentiment_pb2.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=message.name,
        version=int(message.version),
        maxlen=int(message.maxlen),
        vocabulary_size=int(message.vocabulary_size),
        decision_threshold=float(message.decision_threshold),
        preset=message.preset,
        metrics=dict(sorted(message.metrics.items())),
    )
