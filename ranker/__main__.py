"""`python -m ranker`: serve retrieval and ranking for a world over gRPC and a shared-memory ring."""

from __future__ import annotations

import argparse
from pathlib import Path

from feedserve.v1 import ranker_pb2, ranker_pb2_grpc
from mesh.config import DEFAULT_PORTS
from mesh.service import run_core
from ranker.service import Ranker, RankerServicer
from ranker.training import ensure_model
from world import load_world


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ranker", description=__doc__)
    parser.add_argument("--world", type=Path, required=True, help="a built world directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS["ranker"])
    parser.add_argument("--threads", type=int, default=2, help="engine intra-op threads")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="model precision (default: fp32)")
    args = parser.parse_args()

    def build():
        world = load_world(args.world)
        core = Ranker(world, ensure_model(world), precision=args.precision, threads=args.threads)
        servicer = RankerServicer(core)
        return core.handlers(), lambda server: ranker_pb2_grpc.add_RankerServicer_to_server(servicer, server)

    run_core("ranker", ranker_pb2.DESCRIPTOR.services_by_name["Ranker"], build, f"{args.host}:{args.port}")


if __name__ == "__main__":
    main()
