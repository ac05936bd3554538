"""Conversion between the protobuf Tensor and numpy, checking every field on the way in."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, overload

import numpy as np

from errors import InvalidArgument
from feedserve.v1 import common_pb2

__all__ = ["DTYPES", "to_tensor", "from_tensor", "check_finite", "expect"]

# One table for both directions; the ring header uses the same codes.
DTYPES: dict[int, np.dtype] = {
    common_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    common_pb2.DTYPE_INT64: np.dtype("<i8"),
    common_pb2.DTYPE_INT32: np.dtype("<i4"),
    common_pb2.DTYPE_INT8: np.dtype("i1"),
    common_pb2.DTYPE_UINT8: np.dtype("u1"),
}
_CODES = {dt: code for code, dt in DTYPES.items()}

MAX_RANK = 4
MAX_DIM = 2**31 - 1  # any one dimension; the product is checked against the bytes actually sent


def to_tensor(array: np.ndarray, name: str = "") -> common_pb2.Tensor:
    """Encode an array as a Tensor (one copy, into the message's bytes)."""
    array = np.asarray(array)
    dt = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    code = _CODES.get(np.dtype(dt))
    if code is None:
        raise InvalidArgument(name or "tensor", f"dtype {array.dtype} is not supported")
    return common_pb2.Tensor(
        name=name,
        dtype=code,  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
        shape=array.shape,
        data=np.ascontiguousarray(array, dtype=dt).tobytes(),
    )


def from_tensor(
    tensor: common_pb2.Tensor,
    field: str,
    dtype: np.dtype | None = None,
    ndim: int | None = None,
) -> np.ndarray:
    """Decode a Tensor as a read-only view of its bytes, rejecting any inconsistency."""
    if tensor.dtype not in DTYPES:
        raise InvalidArgument(f"{field}.dtype", f"unknown dtype {tensor.dtype}")
    dt = DTYPES[tensor.dtype]
    if dtype is not None and dt != np.dtype(dtype):
        raise InvalidArgument(f"{field}.dtype", f"expected {np.dtype(dtype).name}, got {dt.name}")
    shape = tuple(tensor.shape)
    if len(shape) > MAX_RANK or any(not 0 <= d <= MAX_DIM for d in shape):
        raise InvalidArgument(f"{field}.shape", f"invalid shape {list(shape)}: up to {MAX_RANK} dimensions of 0..2^31-1")
    if ndim is not None and len(shape) != ndim:
        raise InvalidArgument(f"{field}.shape", f"expected {ndim} dimensions, got {len(shape)}")
    count = math.prod(shape)  # exact (Python ints): an int64 product could wrap to match the data
    if math.prod(d for d in shape if d) * dt.itemsize >= 2**62:  # numpy refuses such a shape even when empty
        raise InvalidArgument(f"{field}.shape", f"shape {list(shape)} is too large")
    if count * dt.itemsize != len(tensor.data):
        raise InvalidArgument(
            f"{field}.data", f"{len(tensor.data)} bytes do not match shape {list(shape)} of {dt.name}"
        )
    return np.frombuffer(tensor.data, dtype=dt).reshape(shape)


def check_finite(array: np.ndarray, field: str) -> None:
    """Reject NaN and Inf, which would poison every vector they touch."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidArgument(field, "contains NaN or Inf")


@overload
def expect(tensors: Mapping[str, np.ndarray], field: str, dtype: np.dtype | type, ndim: int | None = None, *,
           required: Literal[True]) -> np.ndarray: ...


@overload
def expect(tensors: Mapping[str, np.ndarray], field: str, dtype: np.dtype | type, ndim: int | None = None,
           required: bool = False) -> np.ndarray | None: ...


def expect(tensors: Mapping[str, np.ndarray], field: str, dtype: np.dtype | type, ndim: int | None = None,
           required: bool = False) -> np.ndarray | None:
    """The tensor `field` from a handler's tensors, checked for dtype and rank; None when absent."""
    array = tensors.get(field)
    if array is None:
        if required:
            raise InvalidArgument(field, "is required")
        return None
    if array.dtype != np.dtype(dtype):
        raise InvalidArgument(f"{field}.dtype", f"expected {np.dtype(dtype).name}, got {array.dtype.name}")
    if ndim is not None and array.ndim != ndim:
        raise InvalidArgument(f"{field}.shape", f"expected {ndim} dimensions, got {array.ndim}")
    return array
