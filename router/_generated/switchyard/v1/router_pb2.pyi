from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoutePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_POLICY_UNSPECIFIED: _ClassVar[RoutePolicy]
    ROUTE_POLICY_AUTO: _ClassVar[RoutePolicy]
    ROUTE_POLICY_CACHE_ONLY: _ClassVar[RoutePolicy]
    ROUTE_POLICY_MODEL_ONLY: _ClassVar[RoutePolicy]

class Route(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_UNSPECIFIED: _ClassVar[Route]
    ROUTE_CACHE: _ClassVar[Route]
    ROUTE_MODEL: _ClassVar[Route]
ROUTE_POLICY_UNSPECIFIED: RoutePolicy
ROUTE_POLICY_AUTO: RoutePolicy
ROUTE_POLICY_CACHE_ONLY: RoutePolicy
ROUTE_POLICY_MODEL_ONLY: RoutePolicy
ROUTE_UNSPECIFIED: Route
ROUTE_CACHE: Route
ROUTE_MODEL: Route

class PredictRequest(_message.Message):
    __slots__ = ("task", "text", "policy", "min_confidence")
    TASK_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    task: str
    text: str
    policy: RoutePolicy
    min_confidence: float
    def __init__(self, task: _Optional[str] = ..., text: _Optional[str] = ..., policy: _Optional[_Union[RoutePolicy, str]] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("label", "score", "scores", "route", "model", "model_version", "cache_generation", "server_latency_ms")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    SERVER_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    scores: _containers.ScalarMap[str, float]
    route: Route
    model: str
    model_version: str
    cache_generation: str
    server_latency_ms: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., scores: _Optional[_Mapping[str, float]] = ..., route: _Optional[_Union[Route, str]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., cache_generation: _Optional[str] = ..., server_latency_ms: _Optional[float] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("task", "texts", "policy", "min_confidence")
    TASK_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    task: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    policy: RoutePolicy
    min_confidence: float
    def __init__(self, task: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., policy: _Optional[_Union[RoutePolicy, str]] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PredictResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[PredictResponse, _Mapping]]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("task", "labels", "model", "model_version", "cache_generation", "confidence_threshold", "max_text_length", "candidate_version", "canary_weight", "shadow_share", "version_problems")
    TASK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHARE_FIELD_NUMBER: _ClassVar[int]
    VERSION_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    task: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    model: str
    model_version: str
    cache_generation: str
    confidence_threshold: float
    max_text_length: int
    candidate_version: str
    canary_weight: float
    shadow_share: float
    version_problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., cache_generation: _Optional[str] = ..., confidence_threshold: _Optional[float] = ..., max_text_length: _Optional[int] = ..., candidate_version: _Optional[str] = ..., canary_weight: _Optional[float] = ..., shadow_share: _Optional[float] = ..., version_problems: _Optional[_Iterable[str]] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ...) -> None: ...
