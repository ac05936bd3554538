"""Running a service core on both transports: its gRPC servicer, and its ring unless transport is grpc."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Mapping

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from mesh.config import transport_mode
from mesh.grpc_server import ServiceServer, run_service
from mesh.logging import get_logger
from mesh.methods import Handler
from mesh.ring import RingConfig, RingServer, transport_registration

__all__ = ["with_ring", "run_core", "every"]

AddServicer = Callable[[grpc.aio.Server], None]


def with_ring(
    service: str,
    descriptor: ServiceDescriptor,
    handlers: Mapping[str, Handler],
    add_servicer: AddServicer,
    stoppers: list[Callable[[], None]],
    config: RingConfig = RingConfig(),
    workers: int = 1,
    on_failure: Callable[[], None] | None = None,
    rings: list[RingServer] | None = None,
) -> dict[str, AddServicer]:
    """Registrations for the service plus its Transport handshake; starts its ring unless transport is grpc
    (and adds it to `rings`). `on_failure` runs if the ring's dispatchers cannot be kept alive."""
    ring = None
    if transport_mode() != "grpc":
        ring = RingServer(service, descriptor, handlers, config, workers=workers, on_failure=on_failure)
        ring.start()
        stoppers.append(ring.stop)
        if rings is not None:
            rings.append(ring)
    return {descriptor.full_name: add_servicer, **transport_registration(ring)}


def run_core(
    service: str,
    descriptor: ServiceDescriptor,
    build: Callable[[], tuple[Mapping[str, Handler], AddServicer]],
    address: str,
    log_level: str = "INFO",
    ring_workers: int = 1,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve a core in the foreground until SIGTERM: `build` returns its handlers and its servicer's adder;
    `on_stop` runs after the transports stop (a core saving its state)."""
    stoppers: list[Callable[[], None]] = []
    rings: list[RingServer] = []
    started: list[tuple[ServiceServer, asyncio.AbstractEventLoop]] = []

    def ring_failed() -> None:  # from a dispatcher thread: the whole service stops taking traffic
        for running, loop in started:
            running.mark_not_serving_threadsafe(loop, (descriptor.full_name,))

    def on_start(running: ServiceServer) -> None:
        loop = asyncio.get_running_loop()
        started.append((running, loop))
        if os.environ.get("FEEDSERVE_TEST_HOOKS") == "1":  # chaos runs: SIGUSR2 kills one ring dispatcher
            loop.add_signal_handler(signal.SIGUSR2, _kill_dispatchers, rings)

    async def registrations() -> dict[str, AddServicer]:
        handlers, add_servicer = build()
        return with_ring(service, descriptor, handlers, add_servicer, stoppers, workers=ring_workers,
                         on_failure=ring_failed, rings=rings)

    async def stop() -> None:
        for stopper in stoppers:
            stopper()
        if on_stop is not None:
            on_stop()

    run_service(service, registrations, address, on_stop=stop, log_level=log_level, on_start=on_start)


def _kill_dispatchers(rings: list[RingServer]) -> None:
    for ring in rings:
        ring.kill_dispatcher()


def every(seconds: float, work: Callable[[], object], name: str) -> None:
    """Run `work` every `seconds` on a daemon thread (snapshots, expiry sweeps, saved state)."""
    log = get_logger(name)

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(seconds):
            try:
                work()
            except Exception:  # noqa: BLE001 - a failed background pass is logged and retried next period
                log.exception("periodic task failed", task=name)

    threading.Thread(target=loop, name=name, daemon=True).start()
