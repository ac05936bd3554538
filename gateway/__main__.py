"""`python -m gateway`: serve the public Feed, Interact and Generate API, the Catalog API and GatewayAdmin over gRPC."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from catalog import Schema, load_schema, open_store, preset_schema
from catalog.encoding import ContentEncoder
from catalog.schema import PRESETS
from catalog.store import store_default
from engines.sentence import SentenceEncoder, ensure_encoder
from feedserve.v1 import catalog_pb2, catalog_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from gateway.admin import GatewayAdminService
from gateway.auth import ApiKeyInterceptor
from gateway.cache import AnswerCache, FeedCache
from gateway.catalog_api import CatalogService
from gateway.cost import CostLedger
from gateway.dashboard import Dashboard
from gateway.keys import KeyStore
from gateway.metrics import GatewayMetrics
from gateway.online import OnlineMetrics, OnlineMetricsCollector, PropensityLog
from gateway.quotas import DEFAULT_QUOTA, TenantQuotas
from gateway.rollout import GatewayRouting
from gateway.service import GatewayService, keep_fallback_fresh
from mesh.clients import GeneratorClient, ParamServerClient, RankerClient
from mesh.config import StackConfig
from mesh.grpc_server import PUBLIC_MAX_MESSAGE_BYTES, run_service
from mesh.logging import get_logger
from mesh.security import add_tls_arguments, configure, tls_from_args
from mesh.settings import parse_args
from mesh.shards import SlotMap


def _schema(name: str) -> Schema:
    return preset_schema(name) if name in PRESETS else load_schema(Path(name))


def _lazy_encoder(home: Path):
    """The sentence encoder, opened on first use: in the encoder's own (lower priority) thread, so that its engine
    threads inherit that priority."""
    opened: list[SentenceEncoder] = []

    def encode(texts: list[str]):
        if not opened:
            opened.append(SentenceEncoder(ensure_encoder(home), threads=2))
        return opened[0].encode_batch(texts)
    return encode


def build_parser() -> argparse.ArgumentParser:
    """Every option of `python -m gateway` (also what `feedserve up --set gateway.OPTION=VALUE` checks against)."""
    defaults = StackConfig()
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.gateway_port)
    parser.add_argument("--paramserver", default=defaults.paramserver_address,
                        help="HOST:PORT, or a slot map FIRST-LAST=HOST:PORT,... for several shards")
    parser.add_argument("--ranker", default=defaults.ranker_address, help="HOST:PORT")
    parser.add_argument("--generator", default="", help="HOST:PORT of the generator; Generate is UNIMPLEMENTED without it")
    parser.add_argument("--cache-ttl-s", type=float, default=30.0, help="a user's feed is reused this long (default: %(default)s)")
    parser.add_argument("--answer-ttl-s", type=float, default=300.0,
                        help="an exact repeat of a Generate request is answered from the edge this long (0: never)")
    parser.add_argument("--max-message-mib", type=float, default=PUBLIC_MAX_MESSAGE_BYTES / 2**20,
                        help="the largest request the public port accepts, in MiB (default: %(default)s; larger is "
                             "RESOURCE_EXHAUSTED before it is read)")
    parser.add_argument("--cache-mib", type=float, default=256,
                        help="the feed cache's size in MiB, half of it at most for one tenant; exact answers take a "
                             "quarter as much (default: %(default)s; page cursors keep nothing here: each carries its "
                             "ranking)")
    parser.add_argument("--metrics-port", type=int, default=-1,
                        help="HTTP port for /metrics and the live /dashboard (-1: off, 0: any)")
    parser.add_argument("--price-cpu-second", type=float, default=0.0000125,
                        help="price of one CPU second, in your currency (default: %(default)s, about 0.045 a core-hour)")
    parser.add_argument("--cost-alert-per-1k", type=float, default=0.0,
                        help="log and count when a feature's cost per 1,000 requests over a minute exceeds this (0: off)")
    parser.add_argument("--store", default=store_default(),
                        help="the catalog store: a SQLite path or a postgresql:// URL; the Catalog API is UNIMPLEMENTED without it")
    parser.add_argument("--schema", default="simulator",
                        help=f"the catalog's schema: a TOML file or a preset ({', '.join(PRESETS)}; default: %(default)s)")
    parser.add_argument("--encoder-home", type=Path, default=None,
                        help="with --store: encode new items' content vectors in the background, with the sentence "
                             "encoder converted under this home (feedserve up passes its home)")
    parser.add_argument("--keys", default=None,
                        help="the store that holds the API keys (default: --store; `feedserve keys` manages them): "
                             "every public call needs a key unless --no-auth")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve without API keys (a trusted network only; must be asked for)")
    parser.add_argument("--tenant-quota", default=DEFAULT_QUOTA,
                        help="each tenant's RPS[:BURST[:IN_FLIGHT]] (0: no limit; default: %(default)s, so that one "
                             "tenant cannot take every Feed and Generate slot)")
    parser.add_argument("--tenant-quota-for", action="append", default=[], metavar="TENANT=RPS[:BURST[:IN_FLIGHT]]",
                        help="a tenant's own quota (repeatable)")
    parser.add_argument("--routing", action=argparse.BooleanOptionalAction, default=True,
                        help="with --store, follow the model registry in it: canary routing, guardrails and "
                             "`feedserve models`; --no-routing (or no store) leaves every feed to the ranker's "
                             "primary (default: follow)")
    parser.add_argument("--served-log", type=Path, default=None,
                        help="append every served feed (items with position and score) and every attributed "
                             "interaction here as JSON lines: the propensity log (default: none)")
    add_tls_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parse_args(parser, "gateway")  # its section of the configuration file, then the flags
    configure(tls_from_args(args))
    where = None if args.no_auth else (args.keys or args.store)
    if not where and not args.no_auth:
        parser.error("the API keys live in the store: give --store (or --keys STORE), or --no-auth to serve without keys")
    keys = KeyStore(where).follow() if where else None
    overrides = [option.partition("=") for option in args.tenant_quota_for]
    if any(not sep or not tenant for tenant, sep, _ in overrides):
        parser.error("--tenant-quota-for is expected as TENANT=RPS[:BURST[:IN_FLIGHT]]")
    try:
        quotas = TenantQuotas(TenantQuotas.parse(args.tenant_quota),
                              {tenant: TenantQuotas.parse(quota) for tenant, _, quota in overrides})
    except ValueError as exc:
        parser.error(str(exc))
    clients: list = []
    tasks: list[asyncio.Task] = []
    workers: list[ContentEncoder] = []
    logs: list[PropensityLog] = []

    async def build() -> dict:
        shards = SlotMap.parse(args.paramserver) if "=" in args.paramserver else SlotMap.single(args.paramserver)
        paramserver, ranker = ParamServerClient(shards), RankerClient(args.ranker)
        clients.extend([paramserver, ranker])
        generator = GeneratorClient(args.generator) if args.generator else None
        store = open_store(args.store) if args.store else None
        online = OnlineMetrics(PropensityLog(args.served_log) if args.served_log is not None else None)
        routing = GatewayRouting(open_store(args.store), online, ranker) if store is not None and args.routing else None
        feeds = int(args.cache_mib * 2**20)
        service = GatewayService(paramserver, ranker, cache=FeedCache(args.cache_ttl_s, max_bytes=feeds,
                                                                      max_tenant_bytes=feeds // 2),
                                 ledger=CostLedger(args.price_cpu_second, args.cost_alert_per_1k), generator=generator,
                                 answers=AnswerCache(args.answer_ttl_s, max_bytes=feeds // 4, max_tenant_bytes=feeds // 8),
                                 store=store, online=online, routing=routing)
        if online.log is not None:
            logs.append(online.log)
        if generator is not None:
            clients.append(generator)
        if routing is not None:
            tasks.append(asyncio.create_task(routing.watch()))
        admin = GatewayAdminService(service.modes, service.ledger, keys, routing)
        if args.metrics_port >= 0:
            dashboard = Dashboard(service)
            service.on_answer = dashboard.observe
            port = dashboard.serve(args.host, args.metrics_port, GatewayMetrics(service), OnlineMetricsCollector(online))
            get_logger("gateway").info("metrics and dashboard", port=port, dashboard=f"http://{args.host}:{port}/dashboard")
        tasks.append(asyncio.create_task(keep_fallback_fresh(service)))
        services = {}
        if store is not None and args.encoder_home is not None:  # its own connection: encoding never holds the API's
            workers.append(ContentEncoder(open_store(args.store), _lazy_encoder(args.encoder_home)).start())
        if store is not None:
            catalog = CatalogService(store, _schema(args.schema), clients[0], (service.cache, service.answers))
            services[catalog_pb2.DESCRIPTOR.services_by_name["Catalog"].full_name] = (
                lambda server: catalog_pb2_grpc.add_CatalogServicer_to_server(catalog, server))
        return {
            **services,
            gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name:
                lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(service, server),
            gateway_pb2.DESCRIPTOR.services_by_name["GatewayAdmin"].full_name:
                lambda server: gateway_pb2_grpc.add_GatewayAdminServicer_to_server(admin, server),
        }

    async def close() -> None:
        for worker in workers:
            worker.stop()
        for task in tasks:
            task.cancel()
        for client in clients:
            await client.close()
        for log in logs:
            log.close()

    interceptors = [ApiKeyInterceptor(keys, quotas)] if keys is not None else []
    run_service("gateway", build, f"{args.host}:{args.port}", on_stop=close, interceptors=interceptors, public=True,
                max_message_bytes=int(args.max_message_mib * 2**20))


if __name__ == "__main__":
    main()
