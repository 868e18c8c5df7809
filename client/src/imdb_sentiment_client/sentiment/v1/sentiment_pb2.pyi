from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Label(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_UNSPECIFIED: _ClassVar[Label]
    NEGATIVE: _ClassVar[Label]
    POSITIVE: _ClassVar[Label]

class WordStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORD_STATUS_UNSPECIFIED: _ClassVar[WordStatus]
    WORD_STATUS_SCORED: _ClassVar[WordStatus]
    WORD_STATUS_OUT_OF_VOCABULARY: _ClassVar[WordStatus]
    WORD_STATUS_BEYOND_MAXLEN: _ClassVar[WordStatus]
    WORD_STATUS_REMOVED: _ClassVar[WordStatus]
LABEL_UNSPECIFIED: Label
NEGATIVE: Label
POSITIVE: Label
WORD_STATUS_UNSPECIFIED: WordStatus
WORD_STATUS_SCORED: WordStatus
WORD_STATUS_OUT_OF_VOCABULARY: WordStatus
WORD_STATUS_BEYOND_MAXLEN: WordStatus
WORD_STATUS_REMOVED: WordStatus

class Prediction(_message.Message):
    __slots__ = ("label", "score", "model_version")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    label: Label
    score: float
    model_version: int
    def __init__(self, label: _Optional[_Union[Label, str]] = ..., score: _Optional[float] = ..., model_version: _Optional[int] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("reviews",)
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    reviews: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reviews: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ...) -> None: ...

class StreamPredictRequest(_message.Message):
    __slots__ = ("id", "review")
    ID_FIELD_NUMBER: _ClassVar[int]
    REVIEW_FIELD_NUMBER: _ClassVar[int]
    id: str
    review: str
    def __init__(self, id: _Optional[str] = ..., review: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StreamPredictResponse(_message.Message):
    __slots__ = ("id", "prediction", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    prediction: Prediction
    error: Error
    def __init__(self, id: _Optional[str] = ..., prediction: _Optional[_Union[Prediction, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "maxlen", "vocabulary_size", "decision_threshold", "metrics", "preset")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAXLEN_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_SIZE_FIELD_NUMBER: _ClassVar[int]
    DECISION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    maxlen: int
    vocabulary_size: int
    decision_threshold: float
    metrics: _containers.ScalarMap[str, float]
    preset: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., maxlen: _Optional[int] = ..., vocabulary_size: _Optional[int] = ..., decision_threshold: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., preset: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("review",)
    REVIEW_FIELD_NUMBER: _ClassVar[int]
    review: str
    def __init__(self, review: _Optional[str] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("start", "end", "token", "status", "attribution")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    token: str
    status: WordStatus
    attribution: float
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., token: _Optional[str] = ..., status: _Optional[_Union[WordStatus, str]] = ..., attribution: _Optional[float] = ...) -> None: ...

class AttributionMethod(_message.Message):
    __slots__ = ("name", "baseline", "baseline_score", "steps", "convergence_delta")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_SCORE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_DELTA_FIELD_NUMBER: _ClassVar[int]
    name: str
    baseline: str
    baseline_score: float
    steps: int
    convergence_delta: float
    def __init__(self, name: _Optional[str] = ..., baseline: _Optional[str] = ..., baseline_score: _Optional[float] = ..., steps: _Optional[int] = ..., convergence_delta: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("prediction", "words", "method")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    words: _containers.RepeatedCompositeFieldContainer[Word]
    method: AttributionMethod
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., method: _Optional[_Union[AttributionMethod, _Mapping]] = ...) -> None: ...
