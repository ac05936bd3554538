"""Typed surface of the C extension native._native (native/_native.c, py_ring.c, py_cuckoo.c)."""

from collections.abc import Sequence
from typing import Any

MSG_ALIGN: int
MSG_DATA_OFFSET: int
MSG_MAX_TENSORS: int
MSG_NAME_MAX: int

# (name, dtype code, shape, offset): offsets are from the start of the area when encoding,
# from the start of the segment when decoding.
TensorDesc = tuple[str, int, tuple[int, ...], int]

class Ring:  # also a buffer: memoryview(ring) is the whole segment
    """A shared-memory request/response ring; exports the whole segment through the buffer protocol."""

    name: str
    size: int
    address: int
    slot_count: int
    slots_per_lane: int
    request_capacity: int
    response_capacity: int
    server_pid: int
    lane: int
    @classmethod
    def create(
        cls,
        name: str,
        lanes: int = 8,
        slots_per_lane: int = 4,
        request_capacity: int = 1 << 20,
        response_capacity: int = 1 << 20,
    ) -> Ring: ...
    @classmethod
    def attach(cls, name: str) -> Ring: ...
    def close(self) -> None: ...
    def shutdown(self) -> None: ...
    def claim(self, timeout: float) -> int: ...
    def call(self, slot: int, request_len: int, timeout: float, spin_us: float = 50, stale_s: float = 0.5) -> int: ...
    def release(self, slot: int) -> None: ...
    def next(self, timeout: float, spin_us: float = 50) -> tuple[int, int] | None: ...
    def complete(self, slot: int, response_len: int) -> bool: ...
    def reap(self) -> int: ...
    def alive(self, stale_s: float = 0.5) -> bool: ...
    def area_offset(self, slot: int, response: bool) -> int: ...
    def encode(
        self,
        slot: int,
        response: bool,
        method: int,
        status: int,
        request_id: int,
        deadline_ns: int,
        traceparent: str,
        feature_tag: str,
        proto: bytes,
        tensors: Sequence[TensorDesc],
    ) -> int: ...
    def decode(
        self, slot: int, response: bool, length: int
    ) -> tuple[int, int, int, int, str, str, int, int, tuple[TensorDesc, ...]]: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...

class CuckooTable:
    """uint64 keys to embedding rows; every batch call releases the GIL."""

    size: int
    bytes: int
    dim: int
    precision: str
    bucket_count: int
    stash_used: int
    def __init__(self, dim: int, precision: str = "fp32", expected: int = 1024, admit_after: int = 1) -> None: ...
    def lookup_into(self, keys: Any, out: Any, found: Any, now: int = 0, ttl: int = 0, /) -> int: ...
    def upsert_into(self, keys: Any, values: Any, status: Any, now: int = 0, admit: bool = True, /) -> None: ...
    def drift_into(self, keys: Any, targets: Any, rates: Any, out: Any, status: Any, now: int = 0, commit: bool = True, /) -> None: ...
    def expire(self, now: int, ttl: int, /) -> int: ...
    def remove_into(self, keys: Any, removed: Any, /) -> int: ...
    def export_into(self, keys: Any, rows: Any, stamps: Any, /) -> int: ...
