"""`python -m ranker`: serve retrieval and ranking of a catalog over gRPC and a shared-memory ring, following its store."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from catalog import Store, load_schema, open_store, preset_schema
from catalog.artifacts import version_directory
from catalog.registry import model_cache
from catalog.schema import PRESETS
from catalog.store import store_default
from engines import ModelManifest
from engines.base import load_manifest
from errors import FailedPrecondition
from feedserve.v1 import ranker_pb2, ranker_pb2_grpc
from mesh.config import DEFAULT_PORTS, default_home
from mesh.core_server import every, run_core
from mesh.logging import get_logger
from mesh.metrics import serve_metrics
from mesh.security import add_tls_arguments, configure, tls_from_args
from mesh.settings import parse_args
from ranker.blend import COLD_POPULARITY_WEIGHT, FOLLOW_WEIGHT
from ranker.exported import MODEL_NAME, newest_model
from ranker.features import HEADS
from ranker.service import DEFAULT_KEEP, Ranker, RankerServicer


def parse_head_weights(spec: str) -> dict[str, float]:
    """`click=1,like=0.5` -> {"click": 1.0, "like": 0.5}; unknown heads and non-finite weights are refused."""
    weights = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        head, _, value = part.partition("=")
        if head not in HEADS:
            raise argparse.ArgumentTypeError(f"head {head!r} is not one of {', '.join(HEADS)}")
        try:
            weights[head] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"weight of {head} is expected to be a number, got {value!r}") from None
        if not math.isfinite(weights[head]):
            raise argparse.ArgumentTypeError(f"weight of {head} is expected to be finite")
    return weights


def routed_primary(store: Store, family: str, space: int) -> ModelManifest | None:
    """The registry's primary of `family`, when it names one trained for the served space."""
    try:
        primary = store.registry().families[family]
    except KeyError:
        return None
    version = primary.primary
    if version is None or primary.versions[version].space != space:
        return None
    # the staged directory, or (on another host) the version's files fetched from the store by hash
    directory = version_directory(store, primary.versions[version], model_cache(default_home()))
    return load_manifest(directory) if (directory / "manifest.json").exists() else None


def build_parser() -> argparse.ArgumentParser:
    """Every option of `python -m ranker` (also what `feedserve up --set ranker.OPTION=VALUE` checks against)."""
    parser = argparse.ArgumentParser(prog="python -m ranker", description=__doc__)
    parser.add_argument("--store", default=store_default(), help="the catalog store: a SQLite path or a postgresql:// URL "
                                                               "(default: $FEEDSERVE_STORE)")
    parser.add_argument("--schema", default="simulator", help="the catalog's schema: a TOML file or a preset (default: %(default)s)")
    parser.add_argument("--models", type=Path, default=None,
                        help="where trained versions live (default: HOME/models/ranker-mlp); the newest trained "
                             "for the store's served space is served")
    parser.add_argument("--routing", action=argparse.BooleanOptionalAction, default=True,
                        help="follow the model registry in the store: its primary is served at start, its canary "
                             "and shadow beside it, and every change is swapped in without a restart; --no-routing "
                             "serves the newest trained version only (default: follow)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS["ranker"])
    parser.add_argument("--threads", type=int, default=2, help="engine intra-op threads")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="model precision (default: fp32)")
    parser.add_argument("--metrics-port", type=int, default=-1, help="Prometheus /metrics port (-1: off, 0: any)")
    parser.add_argument("--max-batch-delay-us", type=int, default=2_000,
                        help="the longest a request may wait to share a model run; the gateway's mode asks for "
                             "up to this much (default: %(default)s)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where the ranker keeps what it derived from the catalog, to resume after a restart "
                             "(default: HOME/state/ranker-<port>)")
    parser.add_argument("--state-interval-s", type=float, default=600.0,
                        help="also save that state this often, not only at shutdown (0: only at shutdown)")
    parser.add_argument("--ring-workers", type=int, default=4, help="ring dispatcher threads (default: %(default)s)")
    parser.add_argument("--no-diversify", action="store_true",
                        help="rank by score alone (default: at most a quarter of a feed from one category)")
    parser.add_argument("--cascade-keep", type=int, default=DEFAULT_KEEP,
                        help="candidates the full model scores after the cascade's light stage ranks them all; 0: the "
                             "full model scores every candidate (default: %(default)s)")
    parser.add_argument("--cold-popularity", type=float, default=COLD_POPULARITY_WEIGHT,
                        help="a new user's feed (no vector, no history): popularity's weight beside the model's "
                             "scores, both standardised over the candidates; 0: the scores alone, inf: popularity "
                             "alone (default: %(default)s)")
    parser.add_argument("--follow-weight", type=float, default=FOLLOW_WEIGHT,
                        help="a user with a history: the weight, beside the model's scores, of how often each "
                             "candidate followed their latest items in others' sequences (log shares), both "
                             "standardised over the candidates; 0: the scores alone, inf: that alone "
                             "(default: %(default)s)")
    parser.add_argument("--head-weights", default="", type=parse_head_weights,
                        help="blend of the objectives, e.g. click=1,like=0.5,dwell=0.3,share=0.2 (default: the model's)")
    add_tls_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parse_args(parser, "ranker")  # its section of the configuration file, then the flags
    if not args.store:
        parser.error("--store (or $FEEDSERVE_STORE) is needed: the catalog the ranker serves")
    if args.cascade_keep < 0:
        parser.error(f"--cascade-keep is expected to be >= 0 (0: the full model scores every candidate), got {args.cascade_keep}")
    if not args.cold_popularity >= 0:  # NaN too
        parser.error(f"--cold-popularity is expected to be >= 0 (0: the scores alone, inf: popularity alone), got "
                     f"{args.cold_popularity}")
    if not args.follow_weight >= 0:
        parser.error(f"--follow-weight is expected to be >= 0 (0: the scores alone, inf: what follows alone), got "
                     f"{args.follow_weight}")
    configure(tls_from_args(args))

    def build():
        root = args.models or default_home() / "models" / MODEL_NAME
        store = open_store(args.store)
        manifest = routed_primary(store, MODEL_NAME, store.active_space()) if args.routing else None
        manifest = manifest or newest_model(root, space=store.active_space())  # the model of the space the store serves
        if manifest is None:
            raise SystemExit(f"no trained model under {root} for the learned space {store.name} serves "
                             f"({store.active_space()}): run `feedserve train`, then `feedserve up` publishes it")
        schema = preset_schema(args.schema) if args.schema in PRESETS else load_schema(Path(args.schema))
        state_dir = args.state_dir or default_home() / "state" / f"ranker-{args.port}"
        try:
            core = Ranker(store, schema, manifest, precision=args.precision, threads=args.threads,
                          state_dir=state_dir,
                          head_weights=args.head_weights, max_batch_delay_us=args.max_batch_delay_us,
                          diversify=not args.no_diversify, cascade_keep=args.cascade_keep, routing=args.routing,
                          cold_popularity=args.cold_popularity, follow_weight=args.follow_weight)
        except FailedPrecondition as exc:  # its files are not what it was written with: named, not served
            raise SystemExit(f"error: {exc}") from None
        cores.append(core)
        log = get_logger("ranker")
        log.info("catalog applied", sequence=core.follower.applied, resumed_from=core.resumed_from,
                 items=len(core.items), state_dir=str(state_dir))
        if args.state_interval_s > 0:
            every(args.state_interval_s, core.save_state, "save-state")
        servicer = RankerServicer(core)
        if args.metrics_port >= 0:
            get_logger("ranker").info("metrics", port=serve_metrics(args.host, args.metrics_port))
        return core.handlers(), lambda server: ranker_pb2_grpc.add_RankerServicer_to_server(servicer, server)

    cores: list[Ranker] = []
    run_core("ranker", ranker_pb2.DESCRIPTOR.services_by_name["Ranker"], build, f"{args.host}:{args.port}",
             ring_workers=args.ring_workers, on_stop=lambda: _close(cores))


def _close(cores: list[Ranker]) -> None:
    for core in cores:
        core.close()


if __name__ == "__main__":
    main()
