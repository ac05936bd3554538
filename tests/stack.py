"""An in-process stack for tests: paramserver, ranker, generator and gateway on free ports in one event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2_grpc

from catalog import open_store, preset_schema
from engines import ModelManifest
from engines.sentence import SentenceEncoder, ensure_encoder
from feedserve.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
    paramserver_pb2,
    paramserver_pb2_grpc,
    ranker_pb2,
    ranker_pb2_grpc,
)
from gateway.admin import GatewayAdminService
from gateway.auth import ApiKeyInterceptor
from gateway.catalog_api import CatalogService
from gateway.keys import KeyStore
from gateway.online import OnlineMetrics, PropensityLog
from gateway.quotas import TenantQuotas
from gateway.rollout import GatewayRouting
from gateway.service import GatewayService
from generator.caches import EmbeddingCache, SemanticCache
from generator.corpus import TOPICS
from generator.pipeline import Pipeline, RouterConfig
from generator.registry import model_specs
from generator.residency import ModelSpec, ResidencyPool
from generator.service import Generator, GeneratorServicer
from mesh.clients import GeneratorClient, ParamServerClient, RankerClient
from mesh.grpc_server import ServiceServer, start_server
from mesh.methods import HeapOutputs
from mesh.ring import RingConfig, RingServer, transport_registration
from mesh.security import Tls
from paramserver.service import ParamServer, ParamServerServicer
from ranker.service import Ranker, RankerServicer
from tests.catalog_fixture import TestCatalog

LOCAL = "127.0.0.1:0"
CLOCK = 1_790_000_000.0  # the rankers' fixed "now" in tests: the same request gets the same scores at any time


async def serve_with_ring(service: str, descriptor, handlers, add_servicer, config: RingConfig = RingConfig()):
    """A core behind both transports, as `python -m <service>` runs it: gRPC + handshake + ring."""
    ring = RingServer(service, descriptor, handlers, config, log_calls=False)
    ring.start()
    server = await start_server({descriptor.full_name: add_servicer, **transport_registration(ring)}, LOCAL)
    return server, ring


def _name(module, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name


def paramserver_core(catalog: TestCatalog, state_dir: Path, store: str | None = None, **options) -> ParamServer:
    """A paramserver following the catalog's store (items), with users seeded from their history on a fresh state,
    through its logged Upsert (as `feedserve up` seeds them)."""
    core = ParamServer(catalog.dim, state_dir, store=open_store(store or catalog.url), **options)
    if core.tables[paramserver_pb2.TABLE_USER].size == 0:
        owned = core.slots.owns(catalog.user_ids)
        # rows first (seeded users skip admission, like a restored snapshot), then the logged write that keeps them
        core.tables[paramserver_pb2.TABLE_USER].upsert(catalog.user_ids[owned], catalog.user_vectors[owned], admit=False)
        core.upsert(paramserver_pb2.UpsertRequest(table=paramserver_pb2.TABLE_USER),
                    {"keys": catalog.user_ids[owned], "values": catalog.user_vectors[owned]}, HeapOutputs())
    return core


async def start_paramserver(catalog: TestCatalog, state_dir: Path, store: str | None = None,
                            identity: Tls | None = None) -> tuple[ServiceServer, ParamServer]:
    core = paramserver_core(catalog, state_dir, store)
    servicer = ParamServerServicer(core)
    server = await start_server(
        {_name(paramserver_pb2, "ParamServer"): lambda s: paramserver_pb2_grpc.add_ParamServerServicer_to_server(servicer, s)},
        LOCAL, identity=identity,
    )
    return server, core


async def start_ranker(catalog: TestCatalog, manifest: ModelManifest, store: str | None = None,
                       routing: bool = False, identity: Tls | None = None) -> tuple[ServiceServer, Ranker]:
    core = Ranker(open_store(store or catalog.url), catalog.schema, manifest, poll_s=0.01, clock=lambda: CLOCK,
                  routing=routing)
    servicer = RankerServicer(core)
    server = await start_server(
        {_name(ranker_pb2, "Ranker"): lambda s: ranker_pb2_grpc.add_RankerServicer_to_server(servicer, s)}, LOCAL,
        identity=identity,
    )
    return server, core


async def start_gateway(paramserver: str, ranker: str, generator: str | None = None, refresh: bool = True,
                        schema=None, keys: KeyStore | None = None, quotas: TenantQuotas | None = None,
                        routing: bool = False, served_log: Path | None = None, identity: Tls | None = None,
                        **options) -> tuple[ServiceServer, list, GatewayService]:
    """The gateway as `python -m gateway` builds it; with `keys`, behind the API-key door (and `quotas`); with
    `routing`, following the model registry in its `store` (its watch is left to the test:
    `service.routing.watcher.check()`)."""
    clients = [ParamServerClient(paramserver), RankerClient(ranker)]
    online = OnlineMetrics(PropensityLog(served_log) if served_log is not None else None)
    if routing:
        options["routing"] = GatewayRouting(options["store"], online, clients[1])
    service = GatewayService(*clients, generator=GeneratorClient(generator) if generator else None, online=online,
                             **options)
    if generator:
        clients.append(service.generator)
    if refresh:
        await service.refresh_fallback()
    admin = GatewayAdminService(service.modes, service.ledger, keys, service.routing)
    catalog = {}
    if service.store is not None:  # the Catalog API, as `python -m gateway --store` serves it
        api = CatalogService(service.store, schema or preset_schema("simulator"), clients[0],
                             (service.cache, service.answers))
        catalog[_name(catalog_pb2, "Catalog")] = lambda s: catalog_pb2_grpc.add_CatalogServicer_to_server(api, s)
    server = await start_server(
        {**catalog,
         _name(gateway_pb2, "Gateway"): lambda s: gateway_pb2_grpc.add_GatewayServicer_to_server(service, s),
         _name(gateway_pb2, "GatewayAdmin"): lambda s: gateway_pb2_grpc.add_GatewayAdminServicer_to_server(admin, s)},
        LOCAL, interceptors=[ApiKeyInterceptor(keys, quotas)] if keys is not None else [], public=True,
        identity=identity,
    )
    return server, clients, service


@dataclass
class Stack:
    store: str
    gateway: gateway_pb2_grpc.GatewayStub
    admin: gateway_pb2_grpc.GatewayAdminStub
    catalog: catalog_pb2_grpc.CatalogStub
    service: GatewayService
    paramserver: paramserver_pb2_grpc.ParamServerStub
    ranker: ranker_pb2_grpc.RankerStub
    ports: dict[str, int]
    servers: dict[str, ServiceServer]
    channels: list[grpc.aio.Channel]
    paramserver_core: ParamServer
    ranker_core: Ranker | None

    def caught_up(self, sequence: int, timeout_s: float = 30.0) -> None:
        """Wait until the paramserver and the ranker have applied the catalog up to `sequence`."""
        for core in (self.paramserver_core, self.ranker_core):
            if core is not None and not core.follower.wait_for(sequence, timeout_s):
                raise TimeoutError(f"{type(core).__name__} did not apply sequence {sequence} in {timeout_s} s")


@asynccontextmanager
async def running_stack(catalog: TestCatalog, manifest: ModelManifest, state_dir: Path, ranker=None,
                        store: str | None = None, gateway_store: bool = True, routing: bool = False,
                        tls: dict[str, Tls] | None = None, **gateway_options) -> AsyncIterator[Stack]:
    """All three services as real gRPC servers on free ports, torn down on exit, on a private copy of the
    catalog's store (or on `store`). `ranker` may replace the ranker's servicer (a slow one, for deadline tests).
    With `tls` (cli/certificates.py), each server presents its own role's certificate, and every channel the
    process opens presents the gateway's (configure it: `security.configure(tls["gateway"])`)."""
    tls = tls or {}
    store = store or catalog.copy(state_dir / "store")
    serve_model_space(store, catalog, manifest)
    ps_server, ps_core = await start_paramserver(catalog, state_dir / "paramserver", store, tls.get("paramserver"))
    rk_core = None
    if ranker is None:
        rk_server, rk_core = await start_ranker(catalog, manifest, store, routing, tls.get("ranker"))
    else:
        rk_server = await start_server(
            {_name(ranker_pb2, "Ranker"): lambda s: ranker_pb2_grpc.add_RankerServicer_to_server(ranker, s)}, LOCAL)
    if gateway_store:
        gateway_options.setdefault("store", open_store(store))
    gw_server, clients, service = await start_gateway(
        f"127.0.0.1:{ps_server.port}", f"127.0.0.1:{rk_server.port}", routing=routing, identity=tls.get("gateway"),
        **gateway_options)
    servers = {"paramserver": ps_server, "ranker": rk_server, "gateway": gw_server}
    ports = {name: s.port for name, s in servers.items()}
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports.values()]
    try:
        yield Stack(
            store=store,
            gateway=gateway_pb2_grpc.GatewayStub(channels[2]),
            admin=gateway_pb2_grpc.GatewayAdminStub(channels[2]),
            catalog=catalog_pb2_grpc.CatalogStub(channels[2]),
            service=service,
            paramserver=paramserver_pb2_grpc.ParamServerStub(channels[0]),
            ranker=ranker_pb2_grpc.RankerStub(channels[1]),
            ports=ports,
            servers=servers,
            channels=channels,
            paramserver_core=ps_core,
            ranker_core=rk_core,
        )
    finally:
        for channel in channels:
            await channel.close()
        for client in clients:
            await client.close()
        for server in servers.values():
            await server.stop(0)
        ps_core.close()
        if rk_core is not None:
            rk_core.close()


async def start_generator(home: Path, paramserver: str | None = None, catalog: TestCatalog | None = None,
                          budget_bytes: int = 1 << 30, router: RouterConfig = RouterConfig(),
                          specs: dict[str, ModelSpec] | None = None) -> tuple[ServiceServer, Generator]:
    """The generator on a free port: the tiers under `home`, both caches, user topics from `paramserver`."""
    pool = ResidencyPool(specs or model_specs(home), budget_bytes)
    encoder = SentenceEncoder(ensure_encoder(home))
    topics = tuple(open_store(catalog.url).categories()) if catalog is not None else TOPICS
    centroids = encoder.encode_batch(list(topics)) if catalog is not None else None
    core = Generator(Pipeline(pool, router), topics, centroids,
                     ParamServerClient(paramserver) if paramserver else None,
                     SemanticCache(EmbeddingCache(encoder.encode)),
                     store=open_store(catalog.url) if catalog is not None else None)
    servicer = GeneratorServicer(core)
    server = await start_server(
        {_name(generator_pb2, "Generator"): lambda s: generator_pb2_grpc.add_GeneratorServicer_to_server(servicer, s)},
        LOCAL)
    return server, core


@dataclass
class GenerationStack:
    gateway: gateway_pb2_grpc.GatewayStub
    admin: gateway_pb2_grpc.GatewayAdminStub
    generator: Generator
    paramserver_core: object
    health: health_pb2_grpc.HealthStub  # the gateway's


@asynccontextmanager
async def generation_stack(home: Path, catalog: TestCatalog, state_dir: Path,
                           specs: dict[str, ModelSpec] | None = None,
                           keys: KeyStore | None = None) -> AsyncIterator[GenerationStack]:
    """paramserver, generator and gateway on free ports (no ranker: Generate does not use it)."""
    ps_server, ps_core = await start_paramserver(catalog, state_dir)
    paramserver = f"127.0.0.1:{ps_server.port}"
    gen_server, core = await start_generator(home, paramserver, catalog, specs=specs)
    gw_server, clients, _ = await start_gateway(paramserver, "127.0.0.1:1", f"127.0.0.1:{gen_server.port}",
                                                refresh=False, keys=keys)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw_server.port}")
    try:
        yield GenerationStack(gateway_pb2_grpc.GatewayStub(channel), gateway_pb2_grpc.GatewayAdminStub(channel), core,
                              ps_core, health_pb2_grpc.HealthStub(channel))
    finally:
        await channel.close()
        for client in clients:
            await client.close()
        if core.paramserver is not None:
            await core.paramserver.close()
        for server in (gw_server, gen_server, ps_server):
            await server.stop(0)
        ps_core.close()


def serve_model_space(url: str, catalog: TestCatalog, manifest: ModelManifest) -> None:
    """A store the test made from scratch serves the model's learned space: the space's projection (its items have
    no learned vectors: they are placed by their content), under the same space number, published."""
    store = open_store(url)
    space = int(manifest.extra["space"])
    if store.active_space() != space:
        empty = (np.zeros(0, np.int64), np.zeros((0, catalog.dim), np.float32))
        staged = store.add_space("test: the fixture model's space", 0, open_store(catalog.url).projection(space), empty, empty)
        assert staged == space, f"a fresh store stages space {staged}, the model needs {space}"
        store.publish_space(space)
    store.close()


def ranker_for(catalog: TestCatalog, manifest: ModelManifest, **options) -> Ranker:
    """A ranker core over the shared catalog, not following it (tests that write use a copy)."""
    return Ranker(open_store(catalog.url), catalog.schema, manifest, follow=False, clock=lambda: CLOCK, **options)


async def grpc_status(call) -> tuple[grpc.StatusCode, str]:
    """The status code and details a call fails with (it must fail)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()
    raise AssertionError("the call succeeded; a failure was expected")
