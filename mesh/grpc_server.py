"""Running a service: grpc.aio on uvloop, with health, reflection, logging and a graceful stop."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from threadpoolctl import threadpool_limits

from mesh.logging import configure_logging, get_logger
from mesh.roles import RoleInterceptor
from mesh.rpclog import RpcLogInterceptor
from mesh.security import Tls, add_port, configured
from mesh.tracing import configure_tracing

__all__ = ["ServiceServer", "start_server", "run_service", "single_blas_thread", "GRPC_OPTIONS", "PUBLIC_MAX_MESSAGE_BYTES"]

# Ranker-shaped messages reach tens of MiB with full score vectors; the 4 MiB default is too small.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# ... but on the public port, where anybody may send, gRPC's own 4 MiB: `feedserve import` splits its batches to
# fit, and a gateway takes another limit with --max-message-mib.
PUBLIC_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # internal peers restart in seconds: reconnect fast rather than after gRPC's default 1 s to 120 s backoff
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # an address that names several replicas (headless DNS, or ipv4:A,B) spreads calls over every one that answers
    ("grpc.lb_policy_name", "round_robin"),
]

# full service name -> function adding the servicer to a server
Registrations = Mapping[str, Callable[[grpc.aio.Server], None]]


@dataclass
class ServiceServer:
    """A started gRPC server and its health servicer."""

    server: grpc.aio.Server
    health: HealthServicer
    port: int

    def mark_not_serving_threadsafe(self, loop: asyncio.AbstractEventLoop, names: tuple[str, ...]) -> None:
        """From any thread: report NOT_SERVING for `names` (and the server as a whole), so clients fail over."""

        async def mark() -> None:
            for name in ("", *names):
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

        loop.call_soon_threadsafe(lambda: loop.create_task(mark()))

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, then drain in-flight calls for up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(registrations: Registrations, address: str,
                       interceptors: Sequence[grpc.aio.ServerInterceptor] = (), public: bool = False,
                       max_message_bytes: int = PUBLIC_MAX_MESSAGE_BYTES, identity: Tls | None = None) -> ServiceServer:
    """Start a server on `address` (port 0 picks a free one) with health and reflection, under the process's
    transport security (mesh/security.py): an internal service demands a client certificate and checks its role
    per method (mesh/roles.py); a `public` one (the gateway) does neither, and takes messages of at most
    `max_message_bytes`. `interceptors` run inside the log interceptor, so their refusals are logged. `identity`
    is the certificate to present when it is not the process's own (several services in one process: tests)."""
    options = GRPC_OPTIONS if not public else [
        *(o for o in GRPC_OPTIONS if o[0] != "grpc.max_receive_message_length"),
        ("grpc.max_receive_message_length", max_message_bytes)]
    # an internal port under TLS checks who may call what; plaintext has no identity (loopback only, mesh/security.py)
    roles = [RoleInterceptor()] if (identity or configured()) is not None and not public else []
    server = grpc.aio.server(interceptors=[RpcLogInterceptor(), *roles, *interceptors], options=options)
    for add in registrations.values():
        add(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [*registrations, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    port = add_port(server, address, require_client_cert=not public, identity=identity)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    await server.start()
    for name in ("", *registrations):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return ServiceServer(server, health, port)


def single_blas_thread() -> None:
    """BLAS on the calling thread only, for the rest of the process.

    A service answers many requests at once on its own threads, each BLAS call small. OpenBLAS's pool split those
    calls and then busy-waited for the next: measured, one pool thread took 14.7 of a ranker's 18.3 CPU seconds
    at 20 feeds/s (bench/chaos.py's victim), a core that the feeds themselves needed."""
    threadpool_limits(1, "blas")


def run_service(
    service: str,
    build: Callable[[], Awaitable[Registrations]],
    address: str,
    grace: float = 5.0,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    log_level: str = "INFO",
    on_start: Callable[[ServiceServer], None] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    public: bool = False,
    max_message_bytes: int = PUBLIC_MAX_MESSAGE_BYTES,
) -> None:
    """Run a service in the foreground until SIGTERM or SIGINT, then drain and exit. `on_start` sees the
    started server (its health servicer) on the event loop's thread."""
    single_blas_thread()
    configure_logging(service, log_level)
    configure_tracing(service)
    log = get_logger(service)

    async def main() -> None:
        registrations = await build()
        # What a service loads at start (a ranker: 200,000 items' titles, labels, seen sets) lives until it stops.
        # Frozen, a full collection no longer walks it: measured 110 ms -> 0 ms per gen-2 collection on a
        # 200,000-item ranker, and those collections were the feed's 100-300 ms tail.
        gc.collect()
        gc.freeze()
        running = await start_server(registrations, address, interceptors, public, max_message_bytes)
        if on_start is not None:
            on_start(running)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving", address=f"{address.rsplit(':', 1)[0]}:{running.port}",
                 security="plaintext" if configured() is None else ("tls" if public else "mutual tls"))
        try:
            await stop.wait()
            log.info("draining", grace_s=grace)
        finally:
            await running.stop(grace)
            if on_stop is not None:
                await on_stop()
            log.info("stopped")

    uvloop.run(main())
