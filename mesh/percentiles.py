"""The one percentile helper: the dashboard and every benchmark report P50/P99 the same way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["percentiles", "p50_p99"]


def percentiles(values: Iterable[float] | np.ndarray, qs: Sequence[float]) -> list[float]:
    """The `qs` percentiles (0..100) of `values`, linear interpolation; NaN for each when there are none."""
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if array.size == 0:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(array, list(qs))]


def p50_p99(values: Iterable[float] | np.ndarray) -> tuple[float, float]:
    """P50 and P99, in the unit of `values`."""
    p50, p99 = percentiles(values, (50, 99))
    return p50, p99
