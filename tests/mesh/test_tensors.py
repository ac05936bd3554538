"""Tensor encoding: exact round trips, and every inconsistent field rejected by name."""

from __future__ import annotations

import numpy as np
import pytest

from errors import InvalidArgument
from feedserve.v1 import common_pb2
from mesh.tensors import check_finite, from_tensor, to_tensor


class TestTensor:
    @pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int32", "int8", "uint8"])
    def test_round_trip_is_exact(self, dtype: str) -> None:
        """Every supported dtype comes back with the same shape and values."""
        array = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
        back = from_tensor(to_tensor(array, "x"), "x")
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)

    def test_byte_count_must_match_shape(self) -> None:
        """A tensor whose data is shorter than its shape says is rejected, naming the field."""
        tensor = to_tensor(np.zeros(4, np.float32))
        tensor.shape[:] = [5]
        with pytest.raises(InvalidArgument, match="keys.data"):
            from_tensor(tensor, "keys")

    def test_unknown_dtype_is_rejected(self) -> None:
        tensor = common_pb2.Tensor(dtype=99, shape=[1], data=b"\0" * 4)
        with pytest.raises(InvalidArgument, match="v.dtype"):
            from_tensor(tensor, "v")

    def test_expected_dtype_and_rank_are_enforced(self) -> None:
        tensor = to_tensor(np.zeros((2, 2), np.float32))
        with pytest.raises(InvalidArgument, match="expected int64"):
            from_tensor(tensor, "k", np.int64)
        with pytest.raises(InvalidArgument, match="expected 1 dimensions"):
            from_tensor(tensor, "k", np.float32, ndim=1)

    def test_negative_dimension_is_rejected(self) -> None:
        tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=[-1], data=b"")
        with pytest.raises(InvalidArgument, match="shape"):
            from_tensor(tensor, "v")

    def test_nan_and_inf_are_rejected(self) -> None:
        for bad in (np.nan, np.inf):
            with pytest.raises(InvalidArgument, match="NaN or Inf"):
                check_finite(np.array([0.0, bad], np.float32), "values")


@pytest.mark.parametrize("shape", [[0, 2**61], [2**40, 2**40], [2**31 - 1, 2**31 - 1, 0]])
def test_a_huge_shape_is_invalid_argument_even_with_no_data(shape: list[int]) -> None:
    """Found by the bad-input fuzz: a shape whose product wraps (or that numpy cannot represent) with empty
    data was INTERNAL; it is INVALID_ARGUMENT naming the field."""
    tensor = common_pb2.Tensor(dtype=common_pb2.DTYPE_FLOAT32, shape=shape, data=b"")
    with pytest.raises(InvalidArgument, match="keys.shape"):
        from_tensor(tensor, "keys")
