"""`python -m paramserver`: serve the user and item embedding tables over gRPC and a shared-memory ring; items
follow the catalog store's change feed."""

from __future__ import annotations

import argparse
from pathlib import Path

from catalog import open_store
from catalog.drift import parse_rates
from catalog.store import store_default
from engines.sentence import DIM
from feedserve.v1 import paramserver_pb2, paramserver_pb2_grpc
from mesh.config import DEFAULT_PORTS, default_home
from mesh.core_server import every, run_core
from mesh.logging import get_logger
from mesh.security import add_tls_arguments, configure, tls_from_args
from mesh.settings import parse_args
from mesh.shards import parse_slot_range, shard_slots
from paramserver.guardrails import DEFAULT_TRAVEL_PER_HOUR, DEFAULT_UPDATES_PER_MINUTE, Guardrails
from paramserver.metrics import serve_metrics
from paramserver.service import ParamServer, ParamServerServicer, TableConfig
from paramserver.wal import POLICIES


def build_parser() -> argparse.ArgumentParser:
    """Every option of `python -m paramserver` (also what `feedserve up --set paramserver.OPTION=VALUE` checks against)."""
    parser = argparse.ArgumentParser(prog="python -m paramserver", description=__doc__)
    parser.add_argument("--store", default=store_default(), help="the catalog store (SQLite path or postgresql:// URL) whose items "
                                                     "this paramserver serves; without it, items come only from Upsert")
    parser.add_argument("--dim", type=int, default=DIM, help="vector width (default: %(default)s, the content vectors')")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS["paramserver"])
    parser.add_argument("--state-dir", type=Path, help="WAL and snapshots (default: HOME/state/paramserver-<port>)")
    parser.add_argument("--drift-rates", default="",
                        help="drift rate overrides by event name, e.g. like=0.1,skip=-0.02 (defaults: catalog/drift.py)")
    parser.add_argument("--max-updates-per-minute", type=int, default=DEFAULT_UPDATES_PER_MINUTE,
                        help="guardrail: vector moves per user per minute; more are held back (0: off; "
                             "default: %(default)s)")
    parser.add_argument("--max-travel-per-hour", type=float, default=DEFAULT_TRAVEL_PER_HOUR,
                        help="guardrail: how far (distance between unit vectors) a user's vector may get from where "
                             "the hour found it (0: off; default: %(default)s)")
    parser.add_argument("--fsync", choices=POLICIES, default="always",
                        help="always: ack after fsync (group commit); interval: ack after write, fsync every "
                             "--fsync-interval-ms; never: leave it to the kernel (default: %(default)s)")
    parser.add_argument("--fsync-interval-ms", type=float, default=0.0,
                        help="always: extra wait to batch an fsync; interval: the fsync period (default: %(default)s)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32", help="both tables' precision")
    parser.add_argument("--user-ttl-s", type=int, default=0, help="drop users not updated for this long (0: never)")
    parser.add_argument("--admit-after", type=int, default=1, help="a new user gets a row after this many upserts")
    parser.add_argument("--slots", default="0-16383", help="hash slots of users this shard owns, FIRST-LAST")
    parser.add_argument("--shard", help="INDEX/COUNT: own the INDEX-th of COUNT equal slot ranges instead of --slots; "
                                        "INDEX 'auto' reads it from a trailing -N in the hostname (a StatefulSet pod)")
    parser.add_argument("--snapshot-interval-s", type=float, default=300.0, help="0 disables timed snapshots")
    parser.add_argument("--metrics-port", type=int, default=-1, help="Prometheus /metrics port (-1: off, 0: any)")
    add_tls_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parse_args(parser, "paramserver")  # its section of the configuration file, then the flags
    configure(tls_from_args(args))

    def build():
        core = ParamServer(
            args.dim, args.state_dir or default_home() / "state" / f"paramserver-{args.port}", parse_rates(args.drift_rates),
            users=TableConfig(args.precision, args.user_ttl_s, args.admit_after),
            items=TableConfig(args.precision), fsync=args.fsync, fsync_interval_s=args.fsync_interval_ms / 1e3,
            slots=shard_slots(args.shard) if args.shard else parse_slot_range(args.slots),
            store=open_store(args.store) if args.store else None,
            guardrails=Guardrails(args.max_updates_per_minute, args.max_travel_per_hour),
        )
        log = get_logger("paramserver")
        log.info("state restored", snapshot_seq=core.snapshot_seq, wal_records_replayed=core.replayed, feed_seq=core.feed_seq,
                 users=core.tables[1].size, items=core.tables[2].size)
        if args.metrics_port >= 0:
            log.info("metrics", port=serve_metrics(core, args.host, args.metrics_port))
        if args.snapshot_interval_s > 0:
            every(args.snapshot_interval_s, lambda: core.snapshot(None, {}, None), "snapshot")
        if args.user_ttl_s > 0:
            every(max(args.user_ttl_s / 4, 1.0), core.expire, "expire")
        servicer = ParamServerServicer(core)
        return core.handlers(), lambda server: paramserver_pb2_grpc.add_ParamServerServicer_to_server(servicer, server)

    run_core("paramserver", paramserver_pb2.DESCRIPTOR.services_by_name["ParamServer"], build, f"{args.host}:{args.port}")


if __name__ == "__main__":
    main()
