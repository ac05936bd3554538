"""Per-hop timing: each service records monotonic timestamps at its handoffs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from feedserve.v1 import common_pb2

__all__ = ["HopRecorder", "now_ns"]

now_ns = time.monotonic_ns  # CLOCK_MONOTONIC: one clock for every process on the host


class HopRecorder:
    """Collects the stages one service spent on one request, in order."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.hops: list[common_pb2.HopTiming] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body as stage `name` of this service."""
        start = now_ns()
        try:
            yield
        finally:
            self.add(name, start, now_ns())

    def add(self, stage: str, start_ns: int, end_ns: int) -> None:
        self.hops.append(
            common_pb2.HopTiming(service=self.service, stage=stage, start_ns=start_ns, end_ns=end_ns)
        )

    def extend(self, hops: Iterable[common_pb2.HopTiming]) -> None:
        """Adopt the hops a downstream service reported."""
        self.hops.extend(hops)
