"""Per-hop timing: each service records monotonic timestamps at its handoffs, and the CPU each request used.

CPU is thread CPU, never process CPU: a service serves many requests at once, and process CPU would charge each
one for all of them. Work an engine's own threads do is read from those threads' clocks (`ThreadGroup`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from feedserve.v1 import common_pb2
from mesh.metrics import HOP_SECONDS

__all__ = ["HopRecorder", "ThreadGroup", "now_ns", "cpu_ns", "split_cpu", "threads_started_by"]

now_ns = time.monotonic_ns  # CLOCK_MONOTONIC: one clock for every process on the host
cpu_ns = time.thread_time_ns  # the calling thread only: what this request's own work cost
T = TypeVar("T")


def _thread_clock(tid: int) -> int:
    """Linux's CPU clock of another thread of this process (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED))."""
    return ((~tid) << 3) | 6


def _tasks() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:  # not Linux: no per-thread clocks of other threads; their work goes uncounted
        return set()


class ThreadGroup:
    """The native threads a library started (an ONNX Runtime session's intra-op pool): their summed CPU."""

    def __init__(self, tids: Iterable[int] = ()) -> None:
        self.tids = sorted(tids)

    def cpu_ns(self) -> int:
        total = 0
        for tid in self.tids:
            try:
                total += time.clock_gettime_ns(_thread_clock(tid))
            except OSError:  # the thread has exited: its CPU can no longer move
                continue
        return total


def threads_started_by(start: Callable[[], T]) -> tuple[T, ThreadGroup]:
    """Call `start` and return what it returned with the threads that appeared meanwhile (call it while nothing
    else starts threads: at load)."""
    before = _tasks()
    made = start()
    return made, ThreadGroup(_tasks() - before)


def split_cpu(total_ns: int, sizes: list[int]) -> list[int]:
    """A batch's CPU split across its requests by their share of the work (candidates); the shares add up to
    `total_ns` exactly (the remainder goes to the largest)."""
    work = sum(sizes)
    if not sizes:
        return []
    if work == 0:
        shares = [total_ns // len(sizes)] * len(sizes)
    else:
        shares = [total_ns * size // work for size in sizes]
    shares[max(range(len(sizes)), key=sizes.__getitem__)] += total_ns - sum(shares)
    return shares


class HopRecorder:
    """Collects the stages one service spent on one request, in order."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.hops: list[common_pb2.HopTiming] = []
        self.cpu_start = cpu_ns()  # for the service's whole handling of this request
        self.cpu_elsewhere = 0  # thread CPU spent while this request awaited: other requests' (an event loop)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the body as stage `name` of this service, wall clock and this thread's CPU."""
        start, cpu = now_ns(), cpu_ns()
        try:
            yield
        finally:
            self.add(name, start, now_ns(), cpu_ns() - cpu)

    @contextmanager
    def awaiting(self, name: str) -> Iterator[None]:
        """Time an await as stage `name`, wall clock only: on an event loop, the thread's CPU meanwhile went to
        the requests that ran while this one waited, so it is set aside from this request's (`own_cpu`)."""
        start, cpu = now_ns(), cpu_ns()
        try:
            yield
        finally:
            self.cpu_elsewhere += cpu_ns() - cpu
            self.add(name, start, now_ns())

    def own_cpu(self) -> int:
        """This thread's CPU since the recorder was made, less what went to others during awaits."""
        return cpu_ns() - self.cpu_start - self.cpu_elsewhere

    def add(self, stage: str, start_ns: int, end_ns: int, cpu: int = 0) -> None:
        if self.service != "gateway":  # the gateway observes whole relays (gateway/metrics.py)
            HOP_SECONDS.labels(self.service, stage).observe((end_ns - start_ns) / 1e9)
        self.hops.append(
            common_pb2.HopTiming(service=self.service, stage=stage, start_ns=start_ns, end_ns=end_ns, cpu_ns=cpu)
        )

    def extend(self, hops: Iterable[common_pb2.HopTiming]) -> None:
        """Adopt the hops a downstream service reported."""
        self.hops.extend(hops)
