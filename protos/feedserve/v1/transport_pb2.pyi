from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class HandshakeRequest(_message.Message):
    __slots__ = ("boot_id",)
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    boot_id: str
    def __init__(self, boot_id: _Optional[str] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("segment", "server_pid", "boot_id", "methods", "ring_version")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    SERVER_PID_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    RING_VERSION_FIELD_NUMBER: _ClassVar[int]
    segment: str
    server_pid: int
    boot_id: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    ring_version: int
    def __init__(self, segment: _Optional[str] = ..., server_pid: _Optional[int] = ..., boot_id: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., ring_version: _Optional[int] = ...) -> None: ...
