"""`python -m gateway`: serve the public Feed, Interact and Generate API over gRPC."""

from __future__ import annotations

import argparse

from feedserve.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.service import GatewayService
from mesh.clients import ParamServerClient, RankerClient
from mesh.config import StackConfig
from mesh.server import run_service
from mesh.shards import SlotMap


def main() -> None:
    defaults = StackConfig()
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.gateway_port)
    parser.add_argument("--paramserver", default=defaults.paramserver_address,
                        help="HOST:PORT, or a slot map FIRST-LAST=HOST:PORT,... for several shards")
    parser.add_argument("--ranker", default=defaults.ranker_address, help="HOST:PORT")
    args = parser.parse_args()
    clients: list = []

    async def build() -> dict:
        shards = SlotMap.parse(args.paramserver) if "=" in args.paramserver else SlotMap.single(args.paramserver)
        clients.extend([ParamServerClient(shards), RankerClient(args.ranker)])
        service = GatewayService(*clients)
        name = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
        return {name: lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(service, server)}

    async def close() -> None:
        for client in clients:
            await client.close()

    run_service("gateway", build, f"{args.host}:{args.port}", on_stop=close)


if __name__ == "__main__":
    main()
