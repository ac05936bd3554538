"""The whole feed under load: the real stack as child processes, ring fast path on, then forced off.

An open-loop driver sends Feed at a fixed rate over random users (latency counts from each request's
scheduled send time, so a stalled server cannot hide its queue), then steps the rate up to find the
highest one whose P99 stays within 50 ms. The gateway's feed cache is off: every feed is ranked.
2,400 candidates x 4,736 features per feed.

    python bench/load.py [--quick] [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine, record, result_line  # noqa: E402
from cli.stack import Stack, free_ports  # noqa: E402
from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from mesh.config import StackConfig, default_home  # noqa: E402
from ranker.training import ensure_model  # noqa: E402
from world import WorldSpec, ensure_world  # noqa: E402


async def drive(address: str, rate: float, seconds: float, users: int, seed: int) -> dict:
    """Open loop at `rate` per second for `seconds`; latencies from the scheduled send time."""
    rng = np.random.default_rng(seed)
    latencies, codes, hops = [], Counter(), Counter()
    hop_totals: dict[tuple[str, str], float] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def one(at: float, user: int) -> None:
            try:
                reply = await stub.Feed(gateway_pb2.FeedRequest(
                    user_id=user, k=20, context=common_pb2.RequestContext(feature_tag="load")), timeout=1.0)
                codes["OK" if not reply.degraded else "OK_DEGRADED"] += 1
                for hop in reply.hops:
                    key = (hop.service, hop.stage)
                    hop_totals[key] = hop_totals.get(key, 0.0) + (hop.end_ns - hop.start_ns) / 1e6
                    hops[key] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1
            latencies.append(time.perf_counter() - at)

        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the open-loop schedule, not synchronisation
            tasks.append(asyncio.create_task(one(at, int(rng.integers(1, users + 1)))))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)),
            "rps": len(ms) / elapsed, "codes": dict(codes),
            "hops": {f"{s}/{t}": hop_totals[(s, t)] / hops[(s, t)] for s, t in sorted(hop_totals)}}


def run_stack(world, transport: str, rate: float, seconds: float, home: Path, ramp: list[float], ramp_s: float) -> dict:
    os.environ["FEEDSERVE_TRANSPORT"] = transport
    os.environ["FEEDSERVE_TRACE_EXPORT"] = "none"
    gateway, paramserver, ranker = free_ports(3)
    config = StackConfig(gateway_port=gateway, paramserver_port=paramserver, ranker_port=ranker)
    stack = Stack(world.path, config, home / "logs" / f"load-{transport}",
                  extra_args={"gateway": ("--cache-ttl-s", "0"), "paramserver": ("--snapshot-interval-s", "0",
                                                                                  "--state-dir", str(home / "load-state" / transport))})
    stack.start(timeout=300)
    try:
        asyncio.run(drive(config.gateway_address, rate, 3, world.spec.users, seed=99))  # warm-up
        fixed = asyncio.run(drive(config.gateway_address, rate, seconds, world.spec.users, seed=1))
        best = 0.0
        for step in ramp:
            result = asyncio.run(drive(config.gateway_address, step, ramp_s, world.spec.users, seed=int(step)))
            ok = result["p99"] <= 50 and result["codes"].get("OK", 0) >= 0.99 * sum(result["codes"].values())
            print(f"  {transport:<5} {step:6.0f} rps: P50 {result['p50']:6.2f} ms  P99 {result['p99']:7.2f} ms  "
                  f"{result['codes']}", flush=True)
            if not ok:
                break
            best = step
        fixed["max_rps_at_p99_50ms"] = best
        return fixed
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s at the fixed rate, a short ramp")
    parser.add_argument("--rate", type=float, default=100.0, help="fixed request rate (default: %(default)s)")
    parser.add_argument("--seconds", type=float, help="seconds at the fixed rate (default 30; quick 10)")
    parser.add_argument("--home", type=Path, default=default_home(), help="world cache (default: %(default)s)")
    args = parser.parse_args()
    seconds = args.seconds or (10 if args.quick else 30)
    ramp = [100, 150, 200, 250, 300, 400] if args.quick else [100, 125, 150, 175, 200, 250, 300, 350, 400, 500]
    ramp_s = 3 if args.quick else 8
    world = ensure_world(WorldSpec(), args.home)
    ensure_model(world, stream=sys.stderr)
    print(f"load: Feed at {args.rate:.0f} rps for {seconds:.0f} s over {world.spec.users:,} users, cache off, "
          f"2,400 candidates x 4,736 features; then a ramp; {machine()}", flush=True)
    results = {t: run_stack(world, t, args.rate, seconds, args.home, ramp, ramp_s) for t in ("auto", "grpc")}
    ring, plain = results["auto"], results["grpc"]
    print(f"\n{'path':<10} {'rps':>7} {'P50 ms':>8} {'P90 ms':>8} {'P99 ms':>8} {'max rps (P99<=50ms)':>20}  statuses")
    for label, r in (("ring", ring), ("grpc-only", plain)):
        print(f"{label:<10} {r['rps']:7.1f} {r['p50']:8.2f} {r['p90']:8.2f} {r['p99']:8.2f} {r['max_rps_at_p99_50ms']:20.0f}  {r['codes']}")
    print(f"ratio grpc-only/ring: P50 {plain['p50'] / ring['p50']:.2f}x, P99 {plain['p99'] / ring['p99']:.2f}x")
    print("mean per-hop ms (ring): " + ", ".join(f"{k} {v:.2f}" for k, v in ring["hops"].items()))
    print("mean per-hop ms (grpc): " + ", ".join(f"{k} {v:.2f}" for k, v in plain["hops"].items()))
    errors = sum(n for code, n in ring["codes"].items() if not code.startswith("OK"))
    result = {"rps": ring["rps"], "feed_p50_ms": ring["p50"], "feed_p99_ms": ring["p99"],
              "grpc_only_p50_ms": plain["p50"], "grpc_only_p99_ms": plain["p99"],
              "max_rps_at_p99_50ms": ring["max_rps_at_p99_50ms"], "errors": errors}
    record("load", {**result, "ring": ring, "grpc_only": plain, "seconds": seconds, "rate": args.rate})
    print(result_line(result))


if __name__ == "__main__":
    main()
