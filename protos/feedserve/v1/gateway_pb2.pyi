from feedserve.v1 import common_pb2 as _common_pb2
from feedserve.v1 import generator_pb2 as _generator_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_NORMAL: _ClassVar[Mode]
    MODE_SURGE: _ClassVar[Mode]
    MODE_EMERGENCY: _ClassVar[Mode]
MODE_UNSPECIFIED: Mode
MODE_NORMAL: Mode
MODE_SURGE: Mode
MODE_EMERGENCY: Mode

class ListModelsRequest(_message.Message):
    __slots__ = ("family",)
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    family: str
    def __init__(self, family: _Optional[str] = ...) -> None: ...

class StageModelRequest(_message.Message):
    __slots__ = ("directory",)
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    directory: str
    def __init__(self, directory: _Optional[str] = ...) -> None: ...

class ModelVersionRequest(_message.Message):
    __slots__ = ("family", "version", "sample")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    family: str
    version: str
    sample: float
    def __init__(self, family: _Optional[str] = ..., version: _Optional[str] = ..., sample: _Optional[float] = ...) -> None: ...

class CanaryRequest(_message.Message):
    __slots__ = ("family", "version", "share")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    family: str
    version: str
    share: float
    def __init__(self, family: _Optional[str] = ..., version: _Optional[str] = ..., share: _Optional[float] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("family", "reason")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    family: str
    reason: str
    def __init__(self, family: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OnlineMetrics(_message.Message):
    __slots__ = ("feeds", "errors", "impressions", "clicks_at_k", "k", "likes", "skips", "ctr_at_k", "likes_per_feed", "p99_ms")
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_AT_K_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    LIKES_FIELD_NUMBER: _ClassVar[int]
    SKIPS_FIELD_NUMBER: _ClassVar[int]
    CTR_AT_K_FIELD_NUMBER: _ClassVar[int]
    LIKES_PER_FEED_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    feeds: int
    errors: int
    impressions: int
    clicks_at_k: int
    k: int
    likes: int
    skips: int
    ctr_at_k: float
    likes_per_feed: float
    p99_ms: float
    def __init__(self, feeds: _Optional[int] = ..., errors: _Optional[int] = ..., impressions: _Optional[int] = ..., clicks_at_k: _Optional[int] = ..., k: _Optional[int] = ..., likes: _Optional[int] = ..., skips: _Optional[int] = ..., ctr_at_k: _Optional[float] = ..., likes_per_feed: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class ModelVersionInfo(_message.Message):
    __slots__ = ("version", "state", "offline_metrics", "trained_to_sequence", "directory", "footprint_bytes", "last_change", "online", "resident")
    class OfflineMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_METRICS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_TO_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    FOOTPRINT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: str
    offline_metrics: _containers.ScalarMap[str, float]
    trained_to_sequence: int
    directory: str
    footprint_bytes: int
    last_change: str
    online: OnlineMetrics
    resident: bool
    def __init__(self, version: _Optional[str] = ..., state: _Optional[str] = ..., offline_metrics: _Optional[_Mapping[str, float]] = ..., trained_to_sequence: _Optional[int] = ..., directory: _Optional[str] = ..., footprint_bytes: _Optional[int] = ..., last_change: _Optional[str] = ..., online: _Optional[_Union[OnlineMetrics, _Mapping]] = ..., resident: _Optional[bool] = ...) -> None: ...

class ModelFamily(_message.Message):
    __slots__ = ("name", "canary_share", "shadow_share", "memory_budget_bytes", "versions", "shadow")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CANARY_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHARE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    canary_share: float
    shadow_share: float
    memory_budget_bytes: int
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersionInfo]
    shadow: _common_pb2.ShadowMetrics
    def __init__(self, name: _Optional[str] = ..., canary_share: _Optional[float] = ..., shadow_share: _Optional[float] = ..., memory_budget_bytes: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[ModelVersionInfo, _Mapping]]] = ..., shadow: _Optional[_Union[_common_pb2.ShadowMetrics, _Mapping]] = ...) -> None: ...

class ModelList(_message.Message):
    __slots__ = ("families",)
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    families: _containers.RepeatedCompositeFieldContainer[ModelFamily]
    def __init__(self, families: _Optional[_Iterable[_Union[ModelFamily, _Mapping]]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("tenant", "admin", "label", "role")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    admin: bool
    label: str
    role: str
    def __init__(self, tenant: _Optional[str] = ..., admin: _Optional[bool] = ..., label: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("key_id", "tenant", "admin", "created_at", "revoked_at", "label", "role")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant: str
    admin: bool
    created_at: float
    revoked_at: float
    label: str
    role: str
    def __init__(self, key_id: _Optional[str] = ..., tenant: _Optional[str] = ..., admin: _Optional[bool] = ..., created_at: _Optional[float] = ..., revoked_at: _Optional[float] = ..., label: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class CreatedKey(_message.Message):
    __slots__ = ("key", "token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: KeyInfo
    token: str
    def __init__(self, key: _Optional[_Union[KeyInfo, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("include_revoked",)
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    include_revoked: bool
    def __init__(self, include_revoked: _Optional[bool] = ...) -> None: ...

class KeyList(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GetCostRequest(_message.Message):
    __slots__ = ("window_s",)
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    window_s: int
    def __init__(self, window_s: _Optional[int] = ...) -> None: ...

class FeatureCost(_message.Message):
    __slots__ = ("feature_tag", "requests", "cpu_seconds", "cost", "cost_per_1k", "alerts", "tokens")
    FEATURE_TAG_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    feature_tag: str
    requests: int
    cpu_seconds: float
    cost: float
    cost_per_1k: float
    alerts: int
    tokens: int
    def __init__(self, feature_tag: _Optional[str] = ..., requests: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., cost: _Optional[float] = ..., cost_per_1k: _Optional[float] = ..., alerts: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class CostReport(_message.Message):
    __slots__ = ("window_s", "features", "cpu_second_price", "alert_per_1k")
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CPU_SECOND_PRICE_FIELD_NUMBER: _ClassVar[int]
    ALERT_PER_1K_FIELD_NUMBER: _ClassVar[int]
    window_s: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureCost]
    cpu_second_price: float
    alert_per_1k: float
    def __init__(self, window_s: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureCost, _Mapping]]] = ..., cpu_second_price: _Optional[float] = ..., alert_per_1k: _Optional[float] = ...) -> None: ...

class SetModeRequest(_message.Message):
    __slots__ = ("mode",)
    MODE_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ...) -> None: ...

class GetModeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModeStatus(_message.Message):
    __slots__ = ("mode", "forced", "reason", "candidate_count", "generation_enabled", "in_flight", "batch_delay_us")
    MODE_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_ENABLED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    BATCH_DELAY_US_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    forced: bool
    reason: str
    candidate_count: int
    generation_enabled: bool
    in_flight: int
    batch_delay_us: int
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ..., forced: _Optional[bool] = ..., reason: _Optional[str] = ..., candidate_count: _Optional[int] = ..., generation_enabled: _Optional[bool] = ..., in_flight: _Optional[int] = ..., batch_delay_us: _Optional[int] = ...) -> None: ...

class FeedRequest(_message.Message):
    __slots__ = ("context", "user_id", "k", "min_sequence", "user", "include_seen", "exclude", "exclude_ids", "include_labels", "exclude_labels", "published_after", "cursor", "objective_weights")
    class ObjectiveWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_LABELS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    user_id: int
    k: int
    min_sequence: int
    user: str
    include_seen: bool
    exclude: _containers.RepeatedScalarFieldContainer[str]
    exclude_ids: _containers.RepeatedScalarFieldContainer[int]
    include_labels: _containers.RepeatedScalarFieldContainer[str]
    exclude_labels: _containers.RepeatedScalarFieldContainer[str]
    published_after: int
    cursor: str
    objective_weights: _containers.ScalarMap[str, float]
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., user_id: _Optional[int] = ..., k: _Optional[int] = ..., min_sequence: _Optional[int] = ..., user: _Optional[str] = ..., include_seen: _Optional[bool] = ..., exclude: _Optional[_Iterable[str]] = ..., exclude_ids: _Optional[_Iterable[int]] = ..., include_labels: _Optional[_Iterable[str]] = ..., exclude_labels: _Optional[_Iterable[str]] = ..., published_after: _Optional[int] = ..., cursor: _Optional[str] = ..., objective_weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class FeedItem(_message.Message):
    __slots__ = ("item_id", "score", "title", "category", "sources", "id", "position")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    score: float
    title: str
    category: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    id: str
    position: int
    def __init__(self, item_id: _Optional[int] = ..., score: _Optional[float] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ..., id: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...

class FeedResponse(_message.Message):
    __slots__ = ("items", "cold_start", "degraded", "degraded_reason", "hops", "request_id", "model_version", "cached", "mode", "cost", "next_cursor", "catalog_sequence")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[FeedItem]
    cold_start: bool
    degraded: bool
    degraded_reason: str
    hops: _containers.RepeatedCompositeFieldContainer[_common_pb2.HopTiming]
    request_id: str
    model_version: str
    cached: bool
    mode: Mode
    cost: float
    next_cursor: str
    catalog_sequence: int
    def __init__(self, items: _Optional[_Iterable[_Union[FeedItem, _Mapping]]] = ..., cold_start: _Optional[bool] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., hops: _Optional[_Iterable[_Union[_common_pb2.HopTiming, _Mapping]]] = ..., request_id: _Optional[str] = ..., model_version: _Optional[str] = ..., cached: _Optional[bool] = ..., mode: _Optional[_Union[Mode, str]] = ..., cost: _Optional[float] = ..., next_cursor: _Optional[str] = ..., catalog_sequence: _Optional[int] = ...) -> None: ...

class InteractRequest(_message.Message):
    __slots__ = ("context", "user_id", "item_id", "event", "user", "item", "timestamp", "value", "feed_request_id")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FEED_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    user_id: int
    item_id: int
    event: _common_pb2.EventType
    user: str
    item: str
    timestamp: int
    value: float
    feed_request_id: str
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., user_id: _Optional[int] = ..., item_id: _Optional[int] = ..., event: _Optional[_Union[_common_pb2.EventType, str]] = ..., user: _Optional[str] = ..., item: _Optional[str] = ..., timestamp: _Optional[int] = ..., value: _Optional[float] = ..., feed_request_id: _Optional[str] = ...) -> None: ...

class InteractResponse(_message.Message):
    __slots__ = ("applied", "rate", "request_id", "sequence", "held_back")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HELD_BACK_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    rate: float
    request_id: str
    sequence: int
    held_back: _common_pb2.Guardrail
    def __init__(self, applied: _Optional[bool] = ..., rate: _Optional[float] = ..., request_id: _Optional[str] = ..., sequence: _Optional[int] = ..., held_back: _Optional[_Union[_common_pb2.Guardrail, str]] = ...) -> None: ...
