"""Per-request CPU is the request's own: thread CPU, never the process's, and on an event loop the CPU other requests
used while this one awaited is set aside."""

from __future__ import annotations

import asyncio
import threading
import time

from mesh.timing import HopRecorder, cpu_ns, threads_started_by


def _burn(ns: int) -> None:
    start = time.thread_time_ns()
    while time.thread_time_ns() - start < ns:
        pass


def test_an_awaiting_request_is_not_charged_for_what_ran_meanwhile_on_its_loop() -> None:
    """While request A awaits, request B burns 200 ms of CPU on the same loop thread: A's own CPU leaves it out,
    and B's recorder (which never awaited) counts it."""
    burned = 200_000_000

    async def main() -> tuple[int, int]:
        gate = asyncio.Event()

        async def a() -> int:
            hops = HopRecorder("gateway")
            with hops.awaiting("ranker_call"):
                await gate.wait()
            return hops.own_cpu()

        async def b() -> int:
            hops = HopRecorder("gateway")
            _burn(burned)
            gate.set()
            return hops.own_cpu()

        return tuple(await asyncio.gather(a(), b()))  # type: ignore[return-value]

    own_a, own_b = asyncio.run(main())
    assert own_b >= burned
    assert own_a < burned // 4


def test_stage_cpu_is_the_calling_threads_not_another_threads() -> None:
    """A stage on one thread is not charged for 200 ms another thread of the process burns meanwhile."""
    hops = HopRecorder("ranker")
    started, release = threading.Event(), threading.Event()

    def other() -> None:
        started.set()
        _burn(200_000_000)
        release.set()

    with hops.stage("features"):
        worker = threading.Thread(target=other)
        worker.start()
        started.wait()
        release.wait()
    worker.join()
    assert hops.hops[0].cpu_ns < 100_000_000


def test_threads_started_by_finds_a_librarys_new_threads_and_reads_their_cpu() -> None:
    """The threads a call starts are found, and their CPU is read from their own clocks (as for ONNX Runtime's pool)."""
    stop = threading.Event()
    burned = threading.Event()

    def spin() -> None:
        _burn(100_000_000)
        burned.set()
        stop.wait()

    def launch() -> threading.Thread:
        thread = threading.Thread(target=spin)
        thread.start()
        return thread

    thread, group = threads_started_by(launch)
    try:
        assert len(group.tids) == 1
        burned.wait()
        assert group.cpu_ns() >= 100_000_000
        assert cpu_ns() >= 0
    finally:
        stop.set()
        thread.join()
