"""A service in a child process for peer-death tests: the Ranker contract over gRPC and a ring.

Its handler answers at once, except for user_id 666 over the ring: it prints "blocked" and never returns,
so that the test can kill the process with a request in flight. It runs on the services' own runner.
"""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

from feedserve.v1 import ranker_pb2, ranker_pb2_grpc
from mesh.core_server import run_core
from ranker.service import RankerServicer

DESCRIPTOR = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"]


def rank(request: ranker_pb2.RankRequest, tensors, outputs) -> ranker_pb2.RankResponse:
    if request.user_id == 666 and threading.current_thread().name.startswith("ring-"):
        print("blocked", flush=True)
        threading.Event().wait()
    return ranker_pb2.RankResponse(candidates_considered=request.k, model_name="peer")


def build():
    servicer = RankerServicer(SimpleNamespace(rank=rank))
    return {"Rank": rank}, lambda server: ranker_pb2_grpc.add_RankerServicer_to_server(servicer, server)


if __name__ == "__main__":
    run_core("peer", DESCRIPTOR, build, f"127.0.0.1:{sys.argv[1]}")
