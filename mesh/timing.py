"""Per-hop timing: each service records monotonic timestamps at its handoffs."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from feedserve.v1 import common_pb2
from mesh.metrics import HOP_SECONDS

__all__ = ["HopRecorder", "now_ns", "cpu_ns"]

now_ns = time.monotonic_ns  # CLOCK_MONOTONIC: one clock for every process on the host
cpu_ns = time.process_time_ns  # the whole process: engine threads count too


class HopRecorder:
    """Collects the stages one service spent on one request, in order."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.hops: list[common_pb2.HopTiming] = []
        self.cpu_start = cpu_ns()  # for the service's whole handling of this request

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body as stage `name` of this service, wall clock and process CPU."""
        start, cpu = now_ns(), cpu_ns()
        try:
            yield
        finally:
            self.add(name, start, now_ns(), cpu_ns() - cpu)

    def add(self, stage: str, start_ns: int, end_ns: int, cpu: int = 0) -> None:
        if self.service != "gateway":  # the gateway observes whole relays (gateway/metrics.py)
            HOP_SECONDS.labels(self.service, stage).observe((end_ns - start_ns) / 1e9)
        self.hops.append(
            common_pb2.HopTiming(service=self.service, stage=stage, start_ns=start_ns, end_ns=end_ns, cpu_ns=cpu)
        )

    def extend(self, hops: Iterable[common_pb2.HopTiming]) -> None:
        """Adopt the hops a downstream service reported."""
        self.hops.extend(hops)
