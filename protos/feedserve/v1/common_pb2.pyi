from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_INT8: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_IMPRESSION: _ClassVar[EventType]
    EVENT_TYPE_CLICK: _ClassVar[EventType]
    EVENT_TYPE_LIKE: _ClassVar[EventType]
    EVENT_TYPE_SHARE: _ClassVar[EventType]
    EVENT_TYPE_DWELL: _ClassVar[EventType]
    EVENT_TYPE_SKIP: _ClassVar[EventType]
    EVENT_TYPE_DISLIKE: _ClassVar[EventType]

class Guardrail(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUARDRAIL_NONE: _ClassVar[Guardrail]
    GUARDRAIL_RATE: _ClassVar[Guardrail]
    GUARDRAIL_TRAVEL: _ClassVar[Guardrail]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_INT64: DType
DTYPE_INT32: DType
DTYPE_INT8: DType
DTYPE_UINT8: DType
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_IMPRESSION: EventType
EVENT_TYPE_CLICK: EventType
EVENT_TYPE_LIKE: EventType
EVENT_TYPE_SHARE: EventType
EVENT_TYPE_DWELL: EventType
EVENT_TYPE_SKIP: EventType
EVENT_TYPE_DISLIKE: EventType
GUARDRAIL_NONE: Guardrail
GUARDRAIL_RATE: Guardrail
GUARDRAIL_TRAVEL: Guardrail

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class HopTiming(_message.Message):
    __slots__ = ("service", "stage", "start_ns", "end_ns", "cpu_ns")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    START_NS_FIELD_NUMBER: _ClassVar[int]
    END_NS_FIELD_NUMBER: _ClassVar[int]
    CPU_NS_FIELD_NUMBER: _ClassVar[int]
    service: str
    stage: str
    start_ns: int
    end_ns: int
    cpu_ns: int
    def __init__(self, service: _Optional[str] = ..., stage: _Optional[str] = ..., start_ns: _Optional[int] = ..., end_ns: _Optional[int] = ..., cpu_ns: _Optional[int] = ...) -> None: ...

class RequestContext(_message.Message):
    __slots__ = ("feature_tag", "tenant", "trace_id", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FEATURE_TAG_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    feature_tag: str
    tenant: str
    trace_id: str
    fields: _containers.ScalarMap[str, str]
    def __init__(self, feature_tag: _Optional[str] = ..., tenant: _Optional[str] = ..., trace_id: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ShadowMetrics(_message.Message):
    __slots__ = ("primary", "shadow", "compared", "dropped", "spearman", "overlap_at_20", "score_shift")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SPEARMAN_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_AT_20_FIELD_NUMBER: _ClassVar[int]
    SCORE_SHIFT_FIELD_NUMBER: _ClassVar[int]
    primary: str
    shadow: str
    compared: int
    dropped: int
    spearman: float
    overlap_at_20: float
    score_shift: float
    def __init__(self, primary: _Optional[str] = ..., shadow: _Optional[str] = ..., compared: _Optional[int] = ..., dropped: _Optional[int] = ..., spearman: _Optional[float] = ..., overlap_at_20: _Optional[float] = ..., score_shift: _Optional[float] = ...) -> None: ...
