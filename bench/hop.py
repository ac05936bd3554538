"""One hop, ranker-shaped, over gRPC and over the shared-memory ring, side by side.

2,400 int64 candidate ids and a 4,736-float context go in; 2,400 float32 scores come out; the handler
does nothing else. The server is a child process running the real transports (grpc.aio on uvloop, and
a RingServer). Two clients, each over both paths in alternating blocks:

- synchronous: the hop alone (a blocking gRPC stub; the ring channel called in the calling thread);
- the production path, as the gateway calls the ranker: `mesh.transport.Transport` on uvloop, where a ring call
  is handed to an executor thread (so that the loop keeps running) and gRPC is grpc.aio. This is what a feed pays.

    python bench/hop.py [--quick] [--iterations N]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine, percentiles_us, record, result_line  # noqa: E402
from cli.stack import free_ports, handshake_segment, wait_serving  # noqa: E402
from feedserve.v1 import ranker_pb2, ranker_pb2_grpc  # noqa: E402
from mesh.core_server import run_core  # noqa: E402
from mesh.methods import methods_of  # noqa: E402
from mesh.tensors import from_tensor, to_tensor  # noqa: E402
from ranker.service import RankerServicer  # noqa: E402

RANKER = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"]
CANDIDATES, CONTEXT = 2_400, 4_736


def noop(request, tensors, outputs):
    """The no-op handler: allocate the scores output where the transport wants it, compute nothing."""
    outputs.empty("scores", np.float32, (len(tensors["candidates"]),))
    return ranker_pb2.RankResponse(candidates_considered=len(tensors["candidates"]))


def serve(port: int) -> None:
    """The child: the services' own runner (grpc.aio on uvloop, interceptor, health, reflection, ring)."""
    servicer = RankerServicer(SimpleNamespace(rank=noop))  # type: ignore[arg-type]  # a do-nothing core: the hop alone

    def build():
        return {"Rank": noop}, lambda server: ranker_pb2_grpc.add_RankerServicer_to_server(servicer, server)

    run_core("bench", RANKER, build, f"127.0.0.1:{port}", log_level="WARNING")  # per-call log lines filtered on both paths


def measure(port: int, segment: str, iterations: int, warmup: int) -> dict[str, list[int]]:
    from mesh.ring import RingChannel

    ids = np.arange(CANDIDATES, dtype=np.int64)
    context = np.random.default_rng(0).standard_normal(CONTEXT).astype(np.float32)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = ranker_pb2_grpc.RankerStub(channel)
    ring = RingChannel("bench", segment)
    rank = methods_of(RANKER)["Rank"]

    def over_grpc() -> None:
        request = ranker_pb2.RankRequest(k=20, candidates=to_tensor(ids, "candidates"),
                                         context_features=to_tensor(context, "context_features"))
        scores = from_tensor(stub.Rank(request, timeout=5).scores, "scores", np.dtype(np.float32))
        assert scores.shape == (CANDIDATES,)

    def over_ring() -> None:
        with ring.call(rank, ranker_pb2.RankRequest(k=20), {"candidates": ids, "context_features": context}, 5) as reply:
            assert reply.tensors["scores"].shape == (CANDIDATES,)

    paths = {"grpc": over_grpc, "shm": over_ring}
    samples: dict[str, list[int]] = {name: [] for name in paths}
    for call in paths.values():
        for _ in range(warmup):
            call()
    block = 100  # alternate blocks so that both paths see the same machine conditions
    for start in range(0, iterations, block):
        for name, call in paths.items():
            for _ in range(min(block, iterations - start)):
                t0 = time.perf_counter_ns()
                call()
                samples[name].append(time.perf_counter_ns() - t0)
    ring.close()
    channel.close()
    return samples


def measure_production(port: int, iterations: int, warmup: int) -> dict[str, list[int]]:
    """Both paths through the gateway's own client, on uvloop: the ring call's executor hop included."""
    import uvloop

    from mesh.transport import Transport

    ids = np.arange(CANDIDATES, dtype=np.int64)
    context = np.random.default_rng(0).standard_normal(CONTEXT).astype(np.float32)
    tensors: dict[str, np.ndarray] = {"candidates": ids, "context_features": context}

    async def run() -> dict[str, list[int]]:
        clients = {"shm": Transport("ranker", f"127.0.0.1:{port}", RANKER, use_ring=True),
                   "grpc": Transport("ranker", f"127.0.0.1:{port}", RANKER, use_ring=False)}
        samples: dict[str, list[int]] = {name: [] for name in clients}

        async def call(client: Transport) -> None:
            with await client.call("Rank", ranker_pb2.RankRequest(k=20), tensors, 5.0) as reply:
                assert reply.tensors["scores"].shape == (CANDIDATES,)

        try:
            for client in clients.values():
                for _ in range(warmup):
                    await call(client)
            assert clients["shm"].path == "ring", "the production client did not attach the ring"
            block = 100
            for start in range(0, iterations, block):
                for name, client in clients.items():
                    for _ in range(min(block, iterations - start)):
                        t0 = time.perf_counter_ns()
                        await call(client)
                        samples[name].append(time.perf_counter_ns() - t0)
        finally:
            for client in clients.values():
                await client.close()
        return samples

    return uvloop.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (well under 60 s)")
    parser.add_argument("--iterations", type=int, help="timed round trips per path (default 20000, quick 3000)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    iterations = args.iterations or (3_000 if args.quick else 20_000)

    (port,) = free_ports(1)
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)],
                              env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
    try:
        wait_serving(f"127.0.0.1:{port}", 60, server)
        print(f"hop: {CANDIDATES} int64 ids + {CONTEXT} float32 context in, {CANDIDATES} float32 scores out; "
              f"{iterations} round trips per path; {machine()}", flush=True)
        samples = measure(port, handshake_segment(f"127.0.0.1:{port}"), iterations, warmup=min(500, iterations // 5))
        production = measure_production(port, iterations, warmup=min(500, iterations // 5))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)

    shm_p50, shm_p99 = percentiles_us(samples["shm"])
    grpc_p50, grpc_p99 = percentiles_us(samples["grpc"])
    shm_async_p50, shm_async_p99 = percentiles_us(production["shm"])
    grpc_async_p50, grpc_async_p99 = percentiles_us(production["grpc"])
    print(f"{'client / path':<22} {'P50 us':>9} {'P99 us':>9}")
    print(f"{'synchronous / shm':<22} {shm_p50:9.1f} {shm_p99:9.1f}")
    print(f"{'synchronous / grpc':<22} {grpc_p50:9.1f} {grpc_p99:9.1f}")
    print(f"{'production / shm':<22} {shm_async_p50:9.1f} {shm_async_p99:9.1f}")
    print(f"{'production / grpc':<22} {grpc_async_p50:9.1f} {grpc_async_p99:9.1f}")
    print(f"ratio grpc/shm: synchronous P50 {grpc_p50 / shm_p50:.1f}x, P99 {grpc_p99 / shm_p99:.1f}x; production P50 "
          f"{grpc_async_p50 / shm_async_p50:.1f}x, P99 {grpc_async_p99 / shm_async_p99:.1f}x")
    result = {"shm_p50_us": shm_p50, "shm_p99_us": shm_p99, "grpc_p50_us": grpc_p50, "grpc_p99_us": grpc_p99,
              "speedup_p50": grpc_p50 / shm_p50, "production_shm_p50_us": shm_async_p50,
              "production_grpc_p50_us": grpc_async_p50, "production_speedup_p50": grpc_async_p50 / shm_async_p50}
    record("hop", {**result, "iterations": iterations})
    print(result_line(result))


if __name__ == "__main__":
    main()
