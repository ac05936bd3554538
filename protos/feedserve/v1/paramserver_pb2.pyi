from feedserve.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Table(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TABLE_UNSPECIFIED: _ClassVar[Table]
    TABLE_USER: _ClassVar[Table]
    TABLE_ITEM: _ClassVar[Table]
TABLE_UNSPECIFIED: Table
TABLE_USER: Table
TABLE_ITEM: Table

class LookupRequest(_message.Message):
    __slots__ = ("context", "table", "keys")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    table: Table
    keys: _common_pb2.Tensor
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., table: _Optional[_Union[Table, str]] = ..., keys: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("values", "found", "hops")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    values: _common_pb2.Tensor
    found: _common_pb2.Tensor
    hops: _containers.RepeatedCompositeFieldContainer[_common_pb2.HopTiming]
    def __init__(self, values: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., found: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., hops: _Optional[_Iterable[_Union[_common_pb2.HopTiming, _Mapping]]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("context", "table", "keys", "values")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    table: Table
    keys: _common_pb2.Tensor
    values: _common_pb2.Tensor
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., table: _Optional[_Union[Table, str]] = ..., keys: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., values: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class DriftRequest(_message.Message):
    __slots__ = ("context", "user_id", "item_id", "event", "event_time")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    user_id: int
    item_id: int
    event: _common_pb2.EventType
    event_time: int
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., user_id: _Optional[int] = ..., item_id: _Optional[int] = ..., event: _Optional[_Union[_common_pb2.EventType, str]] = ..., event_time: _Optional[int] = ...) -> None: ...

class DriftResponse(_message.Message):
    __slots__ = ("applied", "rate", "user_vector", "created", "held_back")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    USER_VECTOR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    HELD_BACK_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    rate: float
    user_vector: _common_pb2.Tensor
    created: bool
    held_back: _common_pb2.Guardrail
    def __init__(self, applied: _Optional[bool] = ..., rate: _Optional[float] = ..., user_vector: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., created: _Optional[bool] = ..., held_back: _Optional[_Union[_common_pb2.Guardrail, str]] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("context", "table", "keys")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    context: _common_pb2.RequestContext
    table: Table
    keys: _common_pb2.Tensor
    def __init__(self, context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., table: _Optional[_Union[Table, str]] = ..., keys: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("path", "rows")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    path: str
    rows: int
    def __init__(self, path: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...
