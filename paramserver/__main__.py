"""`python -m paramserver`: serve the embedding tables of a world over gRPC and a shared-memory ring."""

from __future__ import annotations

import argparse
from pathlib import Path

from feedserve.v1 import paramserver_pb2, paramserver_pb2_grpc
from mesh.config import DEFAULT_PORTS
from mesh.service import run_core
from paramserver.drift import parse_rates
from paramserver.service import ParamServer, ParamServerServicer
from world import load_world


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m paramserver", description=__doc__)
    parser.add_argument("--world", type=Path, required=True, help="a built world directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS["paramserver"])
    parser.add_argument("--state-dir", type=Path, help="where snapshots go (default: WORLD/state)")
    parser.add_argument("--drift-rates", default="", help="overrides, e.g. like=0.1,skip=-0.02")
    args = parser.parse_args()

    def build():
        core = ParamServer(load_world(args.world), args.state_dir or args.world / "state", parse_rates(args.drift_rates))
        servicer = ParamServerServicer(core)
        return core.handlers(), lambda server: paramserver_pb2_grpc.add_ParamServerServicer_to_server(servicer, server)

    run_core("paramserver", paramserver_pb2.DESCRIPTOR.services_by_name["ParamServer"], build, f"{args.host}:{args.port}")


if __name__ == "__main__":
    main()
