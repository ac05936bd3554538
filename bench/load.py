"""The whole feed under load: the real stack as child processes, ring fast path on, then forced off.

Two drivers, side by side. h2load (Debian's nghttp2-client, installed if missing) posts pre-encoded
gRPC bodies of 8 users from 8 parallel clients at a fixed rate, then steps the rate up to find the
highest whose P99 stays within 50 ms. An open-loop asyncio driver sends Feed at the same fixed rate
over all 50,000 users (latency counts from each request's scheduled send time) and reads gRPC
statuses and the per-hop breakdown, which h2load cannot see (gRPC errors travel in HTTP 200 trailers).
The gateway's feed cache is off: every feed is ranked, 2,400 candidates x 4,736 features.

First, the feed with the learned-vector model against the model before it (the same weights exported in the
previous graph format, without the wide part, on a copy of the store serving content vectors): the P50 of whole
feeds in alternating blocks, and their ratio (`--models-only` stops there).

    python bench/load.py [--quick] [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import ensure_debian_tool, machine, prepare_catalog, record, result_line  # noqa: E402
from cli.bootstrap import upsert_users  # noqa: E402
from cli.stack import Stack, free_ports  # noqa: E402
from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from mesh.config import StackConfig, default_home  # noqa: E402
from mesh.percentiles import p50_p99, percentiles  # noqa: E402
from world import WorldSpec  # noqa: E402


async def drive(address: str, rate: float, seconds: float, users: int, seed: int) -> dict:
    """Open loop at `rate` per second for `seconds`; latencies from the scheduled send time."""
    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    ok_latencies: list[float] = []
    codes: Counter[str] = Counter()
    hops: Counter[tuple[str, str]] = Counter()
    hop_totals: dict[tuple[str, str], float] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def one(at: float, user: int) -> None:
            ok = False
            try:
                reply = await stub.Feed(gateway_pb2.FeedRequest(
                    user_id=user, k=20, context=common_pb2.RequestContext(feature_tag="load")), timeout=1.0)
                codes["OK" if not reply.degraded else "OK_DEGRADED"] += 1
                ok = not reply.degraded
                for hop in reply.hops:
                    key = (hop.service, hop.stage)
                    hop_totals[key] = hop_totals.get(key, 0.0) + (hop.end_ns - hop.start_ns) / 1e6
                    hops[key] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1
            latencies.append(time.perf_counter() - at)
            if ok:
                ok_latencies.append((time.perf_counter() - at) * 1e3)

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
    p50, p90, p99 = percentiles(ms, (50, 90, 99))
    return {"p50": p50, "p90": p90, "p99": p99, "rps": len(ms) / elapsed, "codes": dict(codes), "latencies_ms": ok_latencies,
            "hops": {f"{s}/{t}": hop_totals[(s, t)] / hops[(s, t)] for s, t in sorted(hop_totals)}}


H2LOAD_USERS = (1, 7, 42, 1_000, 5_000, 12_345, 30_000, 49_999)


def ensure_h2load() -> str:
    return ensure_debian_tool("h2load", "nghttp2-client")


def grpc_body(user: int) -> bytes:
    """A Feed request framed as gRPC over HTTP/2 sends it: uncompressed flag, 4-byte length, message."""
    message = gateway_pb2.FeedRequest(user_id=user, k=20, context=common_pb2.RequestContext(feature_tag="h2load"))
    data = message.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def h2load(address: str, rate: float | None, seconds: float) -> dict:
    """One h2load client per user body, all at once; `rate` None means as fast as they go (4 streams each)."""
    binary = ensure_h2load()
    with tempfile.TemporaryDirectory() as scratch:
        runs = []
        for n, user in enumerate(H2LOAD_USERS):
            if rate and n:
                time.sleep(1 / rate)  # stagger the clients' --rps timers: an even arrival stream, not bursts of 8
            body, log = Path(scratch) / f"{user}.bin", Path(scratch) / f"{user}.log"
            body.write_bytes(grpc_body(user))
            pace = ["--rps", f"{rate / len(H2LOAD_USERS):.3f}", "-m", "1"] if rate else ["-m", "4"]
            runs.append((subprocess.Popen(
                [binary, f"http://{address}/feedserve.v1.Gateway/Feed", "-c", "1", "-t", "1", "-D", str(int(seconds)),
                 *pace, "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                 "--log-file", str(log)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), log))
        durations: list[float] = []
        statuses: Counter[str] = Counter()
        for process, log in runs:
            process.communicate(timeout=seconds + 60)
            for line in log.read_text().splitlines():
                _, status, micros = line.split("\t")[:3]
                statuses[f"HTTP {status}"] += 1
                durations.append(int(micros) / 1e3)
    p50, p90, p99 = percentiles(durations if durations else [0.0], (50, 90, 99))
    return {"p50": p50, "p90": p90, "p99": p99, "rps": len(durations) / seconds, "codes": dict(statuses)}


def run_stack(store: str, users: int, transport: str, rate: float, seconds: float, home: Path, ramp: list[float],
              ramp_s: float) -> dict:
    os.environ["FEEDSERVE_TRANSPORT"] = transport
    os.environ["FEEDSERVE_TRACE_EXPORT"] = "none"
    gateway, paramserver, ranker = free_ports(3)
    config = StackConfig(gateway_port=gateway, paramserver_port=paramserver, ranker_port=ranker)
    stack = Stack(home, store, "simulator", config, home / "logs" / f"load-{transport}",
                  extra_args={"gateway": ("--cache-ttl-s", "0"), "paramserver": ("--snapshot-interval-s", "0",
                                                                                  "--state-dir", str(home / "load-state" / transport))})
    stack.start(timeout=300)
    try:
        asyncio.run(drive(config.gateway_address, rate, 3, users, seed=99))  # warm-up
        fixed = asyncio.run(drive(config.gateway_address, rate, seconds, users, seed=1))
        fixed["h2load"] = h2load(config.gateway_address, rate, seconds)
        best = 0.0
        for step in ramp:
            result = h2load(config.gateway_address, step, ramp_s)
            ok = result["p99"] <= 50 and result["codes"].get("HTTP 200", 0) >= 0.99 * sum(result["codes"].values())
            print(f"  h2load {transport:<5} {step:6.0f} rps offered, {result['rps']:6.1f} done: P50 {result['p50']:6.2f} ms  "
                  f"P99 {result['p99']:7.2f} ms  {result['codes']}", flush=True)
            if not ok:
                break
            best = step
        fixed["max_rps_at_p99_50ms"] = best
        return fixed
    finally:
        stack.stop()


def previous_model_home(home: Path, store: str) -> tuple[Path, str]:
    """The stack as it served before learned vectors, for the latency comparison: a copy of the store serving no
    learned space (items' vectors are their content vectors), and the same ranker weights exported without the
    wide part, in the previous graph format. Its users get the same vectors as the new stack's (the cost of a feed
    does not depend on which user it is). Returns (its home, its store)."""
    from catalog import open_store
    from ranker import graphs
    from ranker.training import MODEL_NAME, export, newest_model

    old = home / "previous-model"
    old_store = old / "catalog.db"
    if not old_store.exists():
        old.mkdir(parents=True, exist_ok=True)
        source = open_store(store)
        target = open_store(old_store)
        source.copy_to(target)
        target.publish_space(0)
        new = newest_model(home / "models" / MODEL_NAME)
        if new is None:
            raise SystemExit(f"no trained ranker under {home / 'models' / MODEL_NAME}")
        weights = graphs.weights_of(new.directory / new.graphs["naive"])
        weights.wide = None
        extra = {k: v for k, v in new.extra.items() if k not in ("space", "cold_start", "graph_format")}
        export(weights, new.metrics, old / "models" / MODEL_NAME / "1", "1", "previous format", extra)
        target.close()
    return old, str(old_store)


def compare_models(home: Path, store: str, users: int, rate: float, seconds: float, blocks: int) -> dict:
    """Feed P50 with the learned-vector model against the previous model, in alternating blocks, ring on; only
    answers that were neither degraded nor failed enter the percentiles (the others are counted)."""
    os.environ["FEEDSERVE_TRANSPORT"] = "auto"
    os.environ["FEEDSERVE_TRACE_EXPORT"] = "none"
    old_home, old_store = previous_model_home(home, store)
    from catalog import open_store

    seeded = open_store(store)
    ids, vectors = seeded.learned_users(seeded.active_space())
    samples: dict[str, list[float]] = {"learned": [], "previous": []}
    degraded: Counter = Counter()
    for block in range(blocks):
        for name, where, url in (("learned", home, store), ("previous", old_home, old_store)):
            ports = free_ports(3)
            config = StackConfig(gateway_port=ports[0], paramserver_port=ports[1], ranker_port=ports[2])
            stack = Stack(where, url, "simulator", config, where / "logs" / f"compare-{name}",
                          extra_args={"gateway": ("--cache-ttl-s", "0"),
                                      "paramserver": ("--snapshot-interval-s", "0", "--state-dir",
                                                      str(where / "compare-state" / f"{name}-{block}"))})
            stack.start_data_plane(timeout=300)
            try:
                upsert_users(config.paramserver_address, ids, vectors)
                stack.start_serving(timeout=300)
                asyncio.run(drive(config.gateway_address, rate, 2, users, seed=98))  # warm-up
                result = asyncio.run(drive(config.gateway_address, rate, seconds, users, seed=block))
            finally:
                stack.stop()
            samples[name] += result["latencies_ms"]
            degraded[name] += sum(n for code, n in result["codes"].items() if code != "OK")
            print(f"  block {block + 1}/{blocks} {name:<8}: P50 {result['p50']:.2f} ms  P99 {result['p99']:.2f} ms  "
                  f"{result['codes']}", flush=True)
    out = {}
    for name, values in samples.items():
        out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = p50_p99(values)
        out[f"{name}_not_ok"] = degraded[name]
    out["p50_ratio_learned_vs_previous"] = out["learned_p50_ms"] / out["previous_p50_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s at the fixed rate, a short ramp")
    parser.add_argument("--rate", type=float, default=100.0, help="fixed request rate (default: %(default)s)")
    parser.add_argument("--seconds", type=float, help="seconds at the fixed rate (default 30; quick 10)")
    parser.add_argument("--home", type=Path, help="where the bench catalog is prepared (default: HOME/bench-catalog-N)")
    parser.add_argument("--models-only", action="store_true",
                        help="only the feed P50 with the learned-vector model against the previous one")
    args = parser.parse_args()
    seconds = args.seconds or (10 if args.quick else 30)
    ramp = [100.0, 150, 200, 300] if args.quick else [100.0, 125, 150, 175, 200, 250, 300, 350, 400, 500]
    ramp_s = 3 if args.quick else 8
    spec = WorldSpec()
    home = args.home or default_home() / f"bench-catalog-{spec.items}"
    store = prepare_catalog(home, spec.items, spec.users, spec.interactions)
    print(f"load: Feed at {args.rate:.0f} rps for {seconds:.0f} s over {spec.users:,} users, cache off, "
          f"2,400 candidates x 4,736 features; then a ramp; {machine()}", flush=True)
    print("\nfeed with the learned-vector model vs the previous model (alternating blocks, ring on):", flush=True)
    models = compare_models(home, store, spec.users, args.rate, seconds / 2, 2)
    print(f"learned P50 {models['learned_p50_ms']:.2f} ms P99 {models['learned_p99_ms']:.2f} ms; previous P50 "
          f"{models['previous_p50_ms']:.2f} ms P99 {models['previous_p99_ms']:.2f} ms; ratio learned/previous at P50 "
          f"{models['p50_ratio_learned_vs_previous']:.2f}; not OK (degraded or failed): learned "
          f"{models['learned_not_ok']}, previous {models['previous_not_ok']}", flush=True)
    if args.models_only:
        print(result_line({k: round(v, 3) if isinstance(v, float) else v for k, v in models.items()}))
        return
    results = {t: run_stack(store, spec.users, t, args.rate, seconds, home, ramp, ramp_s) for t in ("auto", "grpc")}
    ring, plain = results["auto"], results["grpc"]
    print(f"\n{'driver / path':<22} {'rps':>7} {'P50 ms':>8} {'P90 ms':>8} {'P99 ms':>8}  statuses")
    for label, r in (("asyncio / ring", ring), ("asyncio / grpc-only", plain),
                     ("h2load / ring", ring["h2load"]), ("h2load / grpc-only", plain["h2load"])):
        print(f"{label:<22} {r['rps']:7.1f} {r['p50']:8.2f} {r['p90']:8.2f} {r['p99']:8.2f}  {r['codes']}")
    print(f"max rps with P99 <= 50 ms (h2load ramp): ring {ring['max_rps_at_p99_50ms']:.0f}, "
          f"grpc-only {plain['max_rps_at_p99_50ms']:.0f}")
    print(f"ratio grpc-only/ring: P50 {plain['p50'] / ring['p50']:.2f}x, P99 {plain['p99'] / ring['p99']:.2f}x")
    print("mean per-hop ms (ring): " + ", ".join(f"{k} {v:.2f}" for k, v in ring["hops"].items()))
    print("mean per-hop ms (grpc): " + ", ".join(f"{k} {v:.2f}" for k, v in plain["hops"].items()))
    errors = sum(n for code, n in ring["codes"].items() if not code.startswith("OK"))
    result = {"rps": ring["rps"], "feed_p50_ms": ring["p50"], "feed_p99_ms": ring["p99"],
              "grpc_only_p50_ms": plain["p50"], "grpc_only_p99_ms": plain["p99"],
              "max_rps_at_p99_50ms": ring["max_rps_at_p99_50ms"], "errors": errors,
              "model_p50_ratio": models["p50_ratio_learned_vs_previous"]}
    for r in (ring, plain):
        r.pop("latencies_ms", None)
    record("load", {**result, "ring": ring, "grpc_only": plain, "models": models, "seconds": seconds, "rate": args.rate})
    print(result_line(result))


if __name__ == "__main__":
    main()
