"""Starting the services as separate local processes, on free ports, and waiting until each reports SERVING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from catalog.registry import Registry, legacy_routing_path
from catalog.store import STORE_ENV, open_store
from cli.access import gateway_channel
from feedserve.v1 import gateway_pb2, gateway_pb2_grpc, transport_pb2, transport_pb2_grpc
from mesh.config import StackConfig
from mesh.ring import boot_id
from mesh.security import Tls, open_channel
from mesh.shards import shard_slots

__all__ = ["Stack", "wait_serving", "wait_ranking", "ServiceProcess", "free_ports", "handshake_segment"]


def free_ports(count: int) -> list[int]:
    """Loopback ports the kernel just handed out; held open together so that they are distinct."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def handshake_segment(address: str, service: str = "") -> str:
    """The shm segment a running service advertises through its Transport handshake ('' if none); with TLS the
    server must hold `service`'s certificate."""
    with open_channel(address, service=service) as channel:
        stub = transport_pb2_grpc.TransportStub(channel)
        return stub.Handshake(transport_pb2.HandshakeRequest(boot_id=boot_id()), timeout=5).segment


@dataclass
class ServiceProcess:
    name: str
    address: str
    process: subprocess.Popen
    log_path: Path
    args: tuple[str, ...] = ()  # what it was started with, to start it again

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_ranking(gateway: str, timeout: float, key: str = "") -> None:
    """Block until the gateway answers a feed by ranking it (its channel to a just-started ranker is connected, and
    a fallback is loaded): a cold-start feed for a user no catalog has, not degraded."""
    deadline = time.monotonic() + timeout
    probe = gateway_pb2.FeedRequest(user="feedserve-readiness-probe", k=1)
    with gateway_channel(gateway, key) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        while True:
            try:
                if not stub.Feed(probe, timeout=5).degraded:
                    return
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise RuntimeError(f"gateway {gateway}: {error.code().name}: {error.details()}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway {gateway} did not rank a feed within {timeout:.0f}s")
            time.sleep(0.1)  # polling a child process's readiness, as wait_serving does


def wait_serving(address: str, timeout: float, process: subprocess.Popen | None = None, service: str = "") -> None:
    """Block until the health service at `address` answers SERVING; fail early if `process` exits. With TLS the
    server must hold `service`'s certificate (none: one valid for the address, as the gateway's is)."""
    deadline = time.monotonic() + timeout
    with open_channel(address, service=service) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process for {address} exited with code {process.returncode}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{address} did not report SERVING within {timeout:.0f}s")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=min(left, 0.5), wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass  # not up yet: the next Check waits for the channel to connect


@dataclass
class Stack:
    """paramserver, ranker, the generator (when `generator_home` is set) and gateway as child processes on one
    catalog store, stopped together. The data plane (paramserver and gateway: the Catalog API, content encoding)
    can start first, so that data comes in and a first model is trained before ranking starts."""

    home: Path
    store: str
    schema: str
    config: StackConfig
    log_dir: Path
    services: list[ServiceProcess] = field(default_factory=list)
    extra_args: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per service, e.g. {"gateway": (...)}
    generator_home: Path | None = None  # where the generation tiers are built; None runs no generator
    generator_args: tuple[str, ...] = ()  # more options for the generator (--real-tier ...)
    tls: dict[str, Tls] | None = None  # each service's certificate (cli/certificates.py); None: plaintext
    auth: bool = False  # the gateway checks API keys (kept in the store); False: it runs --no-auth
    api_key: str = ""  # the key this process sends to the gateway (readiness probes, imports)
    paramserver_shards: int = 1  # more than one: shard i on paramserver_port + i, each owning 1/N of the users

    @property
    def paramserver_map(self) -> str:
        """What the gateway and the generator are given: one address, or a slot map over the shards."""
        c = self.config
        if self.paramserver_shards == 1:
            return c.paramserver_address
        return ",".join(f"{shard_slots(f'{i}/{self.paramserver_shards}')}={c.host}:{c.paramserver_port + i}"
                        for i in range(self.paramserver_shards))

    def _spawn(self, name: str, address: str, *args: str) -> ServiceProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        host, port = address.rsplit(":", 1)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", name, "--host", host, "--port", port, *args, *self.extra_args.get(name, ())],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # the store's URL (a password, maybe) travels in the environment, never in argv where `ps` shows it
                env={**os.environ, "PYTHONUNBUFFERED": "1", "FEEDSERVE_HOME": str(self.home), STORE_ENV: self.store,
                     **(self.tls[name].env() if self.tls is not None else {})},
            )
        service = ServiceProcess(name, address, process, log_path, args)
        self.services.append(service)
        return service

    def restart(self, name: str, timeout: float = 60.0, address: str | None = None) -> ServiceProcess:
        """Start a service again with its arguments (after it died, or was killed), and wait until it serves.
        `address` picks one of several processes of the same name (a paramserver shard)."""
        old = next(s for s in reversed(self.services) if s.name == name and address in (None, s.address))
        if old.process.poll() is None:
            old.process.kill()
        old.process.wait()
        self.services.remove(old)
        service = self._spawn(name, old.address, *old.args)
        self._wait(service, timeout)
        return service

    def running(self, name: str) -> bool:
        return any(s.name == name and s.process.poll() is None for s in self.services)

    def start_data_plane(self, timeout: float = 60.0) -> None:
        """The paramserver and the gateway with its Catalog API and content encoder."""
        c = self.config
        import_legacy_routing(self.store, self.home)
        try:
            shards = []
            for i in range(self.paramserver_shards):
                sharding = ("--shard", f"{i}/{self.paramserver_shards}") if self.paramserver_shards > 1 else ()
                state = self.home / "state" / ("paramserver" if self.paramserver_shards == 1 else f"paramserver-{i}")
                shards.append(self._spawn("paramserver", f"{c.host}:{c.paramserver_port + i}",
                                          "--state-dir", str(state), *sharding))
            for shard in shards:
                self._wait(shard, timeout)
            generator = ("--generator", c.generator_address) if self.generator_home is not None else ()
            gateway = self._spawn(
                "gateway", c.gateway_address, "--paramserver", self.paramserver_map, "--ranker", c.ranker_address,
                "--schema", self.schema, "--encoder-home", str(self.home), *generator,
                "--served-log", str(self.home / "logs" / "served.jsonl"),
                *(() if self.auth else ("--no-auth",)))
            self._wait(gateway, timeout)
        except BaseException:
            self.stop()
            raise

    def start_serving(self, timeout: float = 60.0) -> None:
        """The ranker (on the newest trained model) and the generator, started and waited for."""
        self.spawn_serving()
        self.wait_backends(timeout)

    def spawn_serving(self) -> None:
        """Start the ranker and the generator without waiting for them (they load while the caller works on)."""
        c = self.config
        try:
            self._spawn("ranker", c.ranker_address, "--schema", self.schema)
            if self.generator_home is not None:
                self._spawn("generator", c.generator_address, "--home", str(self.generator_home),
                            "--paramserver", self.paramserver_map, "--routing",
                            *self.generator_args)
        except BaseException:
            self.stop()
            raise

    def wait_backends(self, timeout: float = 60.0) -> None:
        """Until the ranker and the generator serve, and the gateway ranks through them. The generator trains its
        tiers on first use when they are not installed (minutes), so it gets a longer timeout."""
        c = self.config
        try:
            for service in [s for s in self.services if s.name in ("ranker", "generator")]:
                self._wait(service, timeout if service.name != "generator" else max(timeout, 900.0))
            if self.running("gateway"):
                wait_ranking(c.gateway_address, timeout, self.api_key)
        except BaseException:
            self.stop()
            raise

    def start(self, timeout: float = 60.0) -> None:
        """Every service: the data plane, then ranking and generation."""
        self.start_data_plane(timeout)
        self.start_serving(timeout)

    def _wait(self, service: ServiceProcess, timeout: float) -> None:
        try:
            wait_serving(service.address, timeout, service.process, service.name)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{service.name} failed to start: {exc}\n{service.log_tail()}") from None

    def first_exit(self) -> ServiceProcess | None:
        """A child that has exited, if any."""
        return next((s for s in self.services if s.process.poll() is not None), None)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every child (gateway first), then SIGKILL whatever outlives the grace period."""
        for service in reversed(self.services):
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for service in reversed(self.services):
            try:
                service.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()


def import_legacy_routing(store_url: str, home: Path) -> None:
    """A HOME/models/routing.json from a release before the model registry moved into the store: its families go
    into the store's registry (unless that holds some already), and the file is renamed so that no one edits it in
    vain."""
    path = legacy_routing_path(home)
    if not path.exists():
        return
    legacy = Registry.from_json(path.read_text())
    store = open_store(store_url)

    def adopt(registry: Registry) -> bool:
        if registry.families:
            return False
        registry.families.update(legacy.families)
        return True

    try:
        _, adopted = store.change_registry(adopt)
    finally:
        store.close()
    done = path.with_name(path.name + ".imported")
    path.rename(done)
    print(f"the model routing in {path} {'is now' if adopted else 'was not imported: the store already holds'} the "
          f"model registry in the store ({done} keeps the old file)", flush=True)

