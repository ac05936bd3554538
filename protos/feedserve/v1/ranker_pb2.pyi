from feedserve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankRequest(_message.Message):
    __slots__ = ("context", "user_id", "user_vector", "k", "candidate_count", "candidates", "context_features", "return_all_scores", "max_batch_delay_us", "min_sequence", "min_sequence_wait_ms", "exclude", "include_labels", "exclude_labels", "published_after", "head_weights", "include_seen", "model_version")
    class HeadWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    RETURN_ALL_SCORES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_US_FIELD_NUMBER: _ClassVar[int]
    MIN_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_SEQUENCE_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AFTER_FIELD_NUMBER: _ClassVar[int]
    HEAD_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    user_id: int
    user_vector: _common_pb2.Tensor
    k: int
    candidate_count: int
    candidates: _common_pb2.Tensor
    context_features: _common_pb2.Tensor
    return_all_scores: bool
    max_batch_delay_us: int
    min_sequence: int
    min_sequence_wait_ms: int
    exclude: _common_pb2.Tensor
    include_labels: _containers.RepeatedScalarFieldContainer[str]
    exclude_labels: _containers.RepeatedScalarFieldContainer[str]
    published_after: int
    head_weights: _containers.ScalarMap[str, float]
    include_seen: bool
    model_version: str
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., user_id: _Optional[int] = ..., user_vector: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., k: _Optional[int] = ..., candidate_count: _Optional[int] = ..., candidates: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., context_features: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., return_all_scores: _Optional[bool] = ..., max_batch_delay_us: _Optional[int] = ..., min_sequence: _Optional[int] = ..., min_sequence_wait_ms: _Optional[int] = ..., exclude: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., include_labels: _Optional[_Iterable[str]] = ..., exclude_labels: _Optional[_Iterable[str]] = ..., published_after: _Optional[int] = ..., head_weights: _Optional[_Mapping[str, float]] = ..., include_seen: _Optional[bool] = ..., model_version: _Optional[str] = ...) -> None: ...

class RankedItem(_message.Message):
    __slots__ = ("item_id", "score", "title", "category", "sources", "external_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    score: float
    title: str
    category: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    external_id: str
    def __init__(self, item_id: _Optional[int] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ..., external_id: _Optional[str] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("items", "candidate_ids", "scores", "candidates_considered", "hops", "model_name", "model_version", "cold_start", "catalog_sequence", "behind", "candidates_scored")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_CONSIDERED_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_SCORED_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RankedItem]
    candidate_ids: _common_pb2.Tensor
    scores: _common_pb2.Tensor
    candidates_considered: int
    hops: _containers.RepeatedCompositeFieldContainer[_common_pb2.HopTiming]
    model_name: str
    model_version: str
    cold_start: bool
    catalog_sequence: int
    behind: bool
    candidates_scored: int
    def __init__(self, items: _Optional[_Iterable[_Union[RankedItem, _Mapping]]] = ..., candidate_ids: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., scores: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., candidates_considered: _Optional[int] = ..., hops: _Optional[_Iterable[_Union[_common_pb2.HopTiming, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., cold_start: _Optional[bool] = ..., catalog_sequence: _Optional[int] = ..., behind: _Optional[bool] = ..., candidates_scored: _Optional[int] = ...) -> None: ...

class ModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResidentModel(_message.Message):
    __slots__ = ("name", "version", "role", "resident_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    role: str
    resident_bytes: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., role: _Optional[str] = ..., resident_bytes: _Optional[int] = ...) -> None: ...

class ModelsStatus(_message.Message):
    __slots__ = ("models", "not_loaded", "shadow", "memory_budget_bytes")
    class NotLoadedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NOT_LOADED_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ResidentModel]
    not_loaded: _containers.ScalarMap[str, str]
    shadow: _common_pb2.ShadowMetrics
    memory_budget_bytes: int
    def __init__(self, models: _Optional[_Iterable[_Union[ResidentModel, _Mapping]]] = ..., not_loaded: _Optional[_Mapping[str, str]] = ..., shadow: _Optional[_Union[_common_pb2.ShadowMetrics, _Mapping]] = ..., memory_budget_bytes: _Optional[int] = ...) -> None: ...
