"""The whole feed under load, counted honestly: the sustained rate of full feeds, their tail, and their true CPU cost.

Four stacks run as child processes on one prepared catalog (200,000 items, 50,000 users; the gateway's feed cache
off, so every feed is retrieved and ranked): the cascade (the default ranking) and the full model (`--cascade-keep
0`, the baseline), each with the ring fast path on and with gRPC only. Load is offered to them in alternating
blocks by an open-loop asyncio driver over all users; latency counts from each request's scheduled send time, and
statuses are real gRPC statuses (read from the trailers). A degraded answer is never a served feed
(bench/accounting.py): the latencies cover full answers only, and `degraded_share` counts the rest.

1. A ramp, one block per stack per round: the sustained rate is the highest offered rate at which at least 99% of
   answers are full and their P99 is within 50 ms.
2. Blocks at each stack's sustained rate: full-feed P50 and P99, and `cpu_ms_per_feed` = the CPU every stack process
   used (all threads, from /proc) / full feeds. Beside it, what the stack attributes to those feeds itself
   (the hops' thread CPU, batch work split across the batch): the figure the cost ledger books.
3. `flop_efficiency`: the cascade's model run (the kept candidates) in FLOP/s over a plain large MatMul in the same
   ONNX Runtime with the same threads, in alternating blocks: the machine's practical roofline.
4. `quality_ratio`: NDCG@20 of the cascade over the full model on MovieLens-100K's per-user split (the real
   evaluation, learning/evaluation.py, both in the same process); `--no-quality` skips it.
5. h2load (HTTP/2 only: it sees HTTP 200, not gRPC statuses) at the cascade's sustained rate, as a cross-check.

    python bench/load.py [--quick] [--step-seconds 6] [--keep 300] [--no-quality]
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
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.accounting import Tally, outcome_of  # noqa: E402
from bench.common import ensure_debian_tool, machine, prepare_catalog, process_cpu_s, record, result_line  # noqa: E402
from cli.bootstrap import upsert_users  # noqa: E402
from cli.stack import Stack, free_ports  # noqa: E402
from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from gateway.cost import request_cpu_seconds  # noqa: E402
from mesh.config import StackConfig, default_home  # noqa: E402
from mesh.percentiles import p50_p99, percentiles  # noqa: E402
from ranker.service import DEFAULT_KEEP  # noqa: E402
from world import WorldSpec  # noqa: E402

P99_LIMIT_MS = 50.0
RAMP = [10.0, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100, 115, 130, 150, 175, 200, 230, 260, 300, 350, 400]
MIN_REQUESTS = 100  # per ramp step: a P99 over fewer is one unlucky request


@dataclass
class Run:
    """One stack under test and what it answered."""

    name: str  # "cascade/ring", ...
    model: str  # "cascade" or "full"
    transport: str  # "auto" (ring when colocated) or "grpc"
    stack: Stack | None = None
    config: StackConfig | None = None
    rate_index: int = 0
    sustained: float = 0.0
    ramping: bool = True
    at_rate: Tally = field(default_factory=Tally)
    attributed_ms: list[float] = field(default_factory=list)  # the hops' CPU per full feed
    cpu_s: float = 0.0  # every stack process's CPU during the blocks at the sustained rate
    hops: Counter = field(default_factory=Counter)
    hop_ms: dict[str, float] = field(default_factory=dict)


async def drive(address: str, rate: float, seconds: float, users: int, seed: int, run: Run | None = None) -> Tally:
    """Open loop: `rate` Feed calls a second for `seconds`, users drawn uniformly from all of them; each request's
    latency counts from its scheduled send time, so a driver that falls behind is charged, never flattered."""
    rng = np.random.default_rng(seed)
    tally = Tally(seconds=seconds)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def one(at: float, user: int) -> None:
            late = (time.perf_counter() - at) * 1e3
            try:
                reply = await stub.Feed(gateway_pb2.FeedRequest(
                    user_id=user, k=20, context=common_pb2.RequestContext(feature_tag="load")), timeout=1.0)
            except grpc.aio.AioRpcError as error:
                tally.record(outcome_of(None, error.code().name), (time.perf_counter() - at) * 1e3, late)
                return
            tally.record(outcome_of(reply.degraded), (time.perf_counter() - at) * 1e3, late)
            if run is not None and not reply.degraded:
                run.attributed_ms.append(request_cpu_seconds(reply) * 1e3)
                for hop in reply.hops:
                    key = f"{hop.service}/{hop.stage}"
                    run.hops[key] += 1
                    run.hop_ms[key] = run.hop_ms.get(key, 0.0) + (hop.end_ns - hop.start_ns) / 1e6

        for _ in range(3):  # the connection and the first calls' setup are not part of the offered load
            try:
                await stub.Feed(gateway_pb2.FeedRequest(user_id=1, k=20), timeout=5.0)
            except grpc.aio.AioRpcError:
                pass
        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the open-loop schedule, not synchronisation
            tasks.append(asyncio.create_task(one(at, int(rng.integers(1, users + 1)))))
        await asyncio.gather(*tasks)
    return tally


def start(run: Run, home: Path, store: str, keep: int, users: tuple[np.ndarray, np.ndarray], threads: int = 2) -> None:
    os.environ["FEEDSERVE_TRANSPORT"] = run.transport  # read by the children at start
    os.environ["FEEDSERVE_TRACE_EXPORT"] = "none"
    ports = free_ports(3)
    run.config = StackConfig(gateway_port=ports[0], paramserver_port=ports[1], ranker_port=ports[2])
    tag = run.name.replace("/", "-")
    run.stack = Stack(home, store, "simulator", run.config, home / "logs" / f"load-{tag}",
                      extra_args={"gateway": ("--cache-ttl-s", "0"),
                                  "paramserver": ("--snapshot-interval-s", "0",
                                                  "--state-dir", str(home / "load-state" / tag)),
                                  "ranker": ("--cascade-keep", str(keep if run.model == "cascade" else 0),
                                             "--threads", str(threads),
                                             "--state-dir", str(home / "load-state" / f"{tag}-ranker"))})
    run.stack.start_data_plane(timeout=300)
    upsert_users(run.config.paramserver_address, *users)  # the learned users, as `feedserve up` seeds them
    run.stack.start_serving(timeout=600)
    asyncio.run(drive(run.config.gateway_address, 20, 2, len(users[0]), seed=99))  # warm-up


def ramp(runs: list[Run], users: int, step_s: float) -> None:
    """One block per stack per round, each at its own next rate, until every stack fails a rate. A failed step is
    run once more before it counts: one stray stall (a collection, a page fault) is not the rate's verdict, and both
    tries are printed."""
    for run in runs:  # settle: every stack has served load since all started (not counted)
        assert run.config is not None
        asyncio.run(drive(run.config.gateway_address, RAMP[0], step_s, users, seed=5))
    round_ = 0
    while any(r.ramping for r in runs):
        for run in runs:
            if not run.ramping:
                continue
            rate = RAMP[run.rate_index]
            assert run.config is not None
            seconds = max(step_s, MIN_REQUESTS / rate)
            for attempt in ("", " (again)"):
                tally = asyncio.run(drive(run.config.gateway_address, rate, seconds, users,
                                          seed=1000 * round_ + run.rate_index + (7 if attempt else 0)))
                p50, p99 = tally.percentiles()
                ok = tally.sustained(P99_LIMIT_MS)
                print(f"  {run.name:<14} {rate:5.0f}/s offered{attempt}: {tally.served_rps:6.1f} full/s, P50 {p50:6.1f} ms, "
                      f"P99 {p99:7.1f} ms, not full {tally.degraded_share:6.1%}, driver late P99 "
                      f"{percentiles(tally.late_ms, (99,))[0]:5.1f} ms  {'ok' if ok else 'FAILS'}  {dict(tally.outcomes)}",
                      flush=True)
                if ok:
                    break
            if ok:
                run.sustained = rate
                run.rate_index += 1
                run.ramping = run.rate_index < len(RAMP)
            else:
                run.ramping = False
        round_ += 1


def at_sustained_rate(runs: list[Run], users: int, seconds: float, blocks: int) -> None:
    for block in range(blocks):
        for run in runs:
            assert run.stack is not None and run.config is not None
            rate = run.sustained or RAMP[0]
            pids = [s.process.pid for s in run.stack.services]
            cpu = process_cpu_s(pids)
            tally = asyncio.run(drive(run.config.gateway_address, rate, seconds, users, seed=7 + block, run=run))
            run.cpu_s += process_cpu_s(pids) - cpu
            run.at_rate.merge(tally)
            p50, p99 = tally.percentiles()
            print(f"  block {block + 1}/{blocks} {run.name:<14} at {rate:5.0f}/s: P50 {p50:6.1f} ms, P99 {p99:7.1f} ms, "
                  f"not full {tally.degraded_share:6.1%}  {dict(tally.outcomes)}", flush=True)


def flop_efficiency(manifest, keep: int, threads: int, rounds: int) -> dict[str, float]:
    """The model run at the cascade's batch and at the full 2,400, in FLOP/s, against a plain [2048 x 2048] MatMul
    in ONNX Runtime with the same threads: alternating blocks, P50 of each."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from engines.onnx import OnnxEngine, session_options
    from ranker.features import CONTEXT_DIM, CROSS_DIM, HEADS, HIDDEN_ITEM, USER_DIM

    engine = OnnxEngine(manifest, "decomposed", threads=threads)
    size = 2048
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    matmul = ort.InferenceSession(model.SerializeToString(), sess_options=session_options(threads),
                                  providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
    table = rng.standard_normal((200_000, HIDDEN_ITEM), np.float32)
    heads = len(HEADS)

    def feeds(n: int) -> tuple[dict, dict]:
        inputs = {"user": rng.standard_normal((1, USER_DIM), np.float32),
                  "context": rng.standard_normal((1, CONTEXT_DIM), np.float32),
                  "request_of": np.zeros(n, np.int64), "item_table": table,
                  "ids": rng.integers(1, len(table) + 1, n), "cross": rng.standard_normal((n, CROSS_DIM), np.float32),
                  "head_weights": np.ones(heads, np.float32)}
        return inputs, {"scores": np.empty(n, np.float32), "heads": np.empty((n, heads), np.float32)}

    def model_flop(n: int) -> float:  # multiply-adds x 2: the request's terms once, then per candidate
        return 2.0 * ((USER_DIM + CONTEXT_DIM) * HIDDEN_ITEM + n * (CROSS_DIM * HIDDEN_ITEM + HIDDEN_ITEM * 256
                                                                     + 256 * heads + CROSS_DIM * heads + heads))

    samples: dict[str, list[float]] = {"kept": [], "all": [], "matmul": []}
    cases = {"kept": feeds(keep), "all": feeds(2_400)}
    for _ in range(rounds):
        for name, (inputs, outputs) in cases.items():
            for _ in range(10):
                t = time.perf_counter()
                engine.run(inputs, outputs)
                samples[name].append(time.perf_counter() - t)
        for _ in range(3):
            t = time.perf_counter()
            matmul.run(None, {"a": a, "b": b})
            samples["matmul"].append(time.perf_counter() - t)
    roofline = 2.0 * size ** 3 / float(np.median(samples["matmul"]))
    kept = model_flop(keep) / float(np.median(samples["kept"]))
    full = model_flop(2_400) / float(np.median(samples["all"]))
    return {"roofline_gflops": roofline / 1e9, "model_gflops": kept / 1e9, "model_gflops_all": full / 1e9,
            "flop_efficiency": kept / roofline, "flop_efficiency_all": full / roofline,
            "model_ms": float(np.median(samples["kept"])) * 1e3, "model_ms_all": float(np.median(samples["all"])) * 1e3}


def cascade_quality(keep: int) -> dict[str, float]:
    """NDCG@20 of the cascade and of the full model, the same trained pipeline, on MovieLens-100K's per-user split."""
    from bench.quality import SCHEMA, ensure_dataset
    from catalog import preset_schema
    from catalog.datasets import build_store
    from engines.sentence import DIM, SentenceEncoder, ensure_encoder
    from learning import evaluation
    from learning.vectors import QUICK_GRID

    ensure_dataset("ml-100k")
    encoder = SentenceEncoder(ensure_encoder(default_home()), threads=os.cpu_count() or 1)
    store = build_store("ml-100k", default_home() / "bench-quality" / "ml-100k.db", encoder.encode_batch)
    print(f"quality: MovieLens-100K per-user split, the cascade (keep {keep}) and the full model...", flush=True)
    metrics = evaluation.evaluate_per_user(store, preset_schema(SCHEMA), DIM, QUICK_GRID, stream=sys.stderr,
                                           cascade_keep=keep).metrics
    return {"ndcg20_cascade": metrics["ndcg20"], "ndcg20_full_model": metrics["ndcg20_full_model"],
            "quality_ratio": metrics["ndcg20"] / metrics["ndcg20_full_model"]}


def h2load_check(address: str, rate: float, seconds: float, users: int) -> str:
    """h2load at `rate` over 8 users' pre-encoded bodies: HTTP statuses and latency only (gRPC errors travel in
    trailers, which it does not read)."""
    try:
        binary = ensure_debian_tool("h2load", "nghttp2-client")
    except SystemExit as exc:
        return f"h2load skipped: {exc}"
    chosen = np.random.default_rng(3).integers(1, users + 1, 8).tolist()
    with tempfile.TemporaryDirectory() as scratch:
        runs = []
        for user in chosen:
            message = gateway_pb2.FeedRequest(user_id=user, k=20, context=common_pb2.RequestContext(feature_tag="h2load"))
            data = message.SerializeToString()
            body, log = Path(scratch) / f"{user}.bin", Path(scratch) / f"{user}.log"
            body.write_bytes(b"\x00" + len(data).to_bytes(4, "big") + data)
            runs.append((subprocess.Popen(
                [binary, f"http://{address}/feedserve.v1.Gateway/Feed", "-c", "1", "-t", "1", "-D", str(int(seconds)),
                 "--rps", f"{rate / len(chosen):.3f}", "-m", "1", "-d", str(body), "-H", "content-type: application/grpc",
                 "-H", "te: trailers", "--log-file", str(log)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True), log))
        durations: list[float] = []
        statuses: Counter[str] = Counter()
        for process, log in runs:
            process.communicate(timeout=seconds + 60)
            for line in log.read_text().splitlines():
                _, status, micros = line.split("\t")[:3]
                statuses[f"HTTP {status}"] += 1
                durations.append(int(micros) / 1e3)
    p50, p99 = p50_p99(durations) if durations else (float("nan"), float("nan"))
    return f"h2load at {rate:.0f}/s: P50 {p50:.1f} ms, P99 {p99:.1f} ms, {dict(statuses)} (HTTP statuses only)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter ramp steps and blocks")
    parser.add_argument("--step-seconds", type=float, help="seconds per ramp step (default 8; quick 4)")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="the cascade's kept candidates (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="the ranker's engine threads, in both configurations (default: %(default)s, the ranker's)")
    parser.add_argument("--no-quality", action="store_true", help="skip the MovieLens-100K quality ratio")
    parser.add_argument("--grpc-only-too", action="store_true",
                        help="also run both models with the ring off (four stacks instead of two)")
    parser.add_argument("--home", type=Path, help="where the bench catalog is prepared (default: HOME/bench-catalog-N)")
    args = parser.parse_args()
    step_s = args.step_seconds or (4.0 if args.quick else 8.0)
    blocks, block_s = (2, 5.0) if args.quick else (3, 15.0)
    spec = WorldSpec()
    home = args.home or default_home() / f"bench-catalog-{spec.items}"
    store = prepare_catalog(home, spec.items, spec.users, spec.interactions)
    print(f"load: Feed over {spec.users:,} users, {spec.items:,} items, cache off; the cascade (keep {args.keep}) vs the "
          f"full model; {machine()}", flush=True)
    quality = {} if args.no_quality else cascade_quality(args.keep)
    if quality:
        print(f"  NDCG@20 cascade {quality['ndcg20_cascade']:.4f}, full model {quality['ndcg20_full_model']:.4f}: "
              f"quality_ratio {quality['quality_ratio']:.4f}", flush=True)

    from catalog import open_store
    from learning.training import MODEL_NAME, newest_model

    seeded = open_store(store)
    users = seeded.learned_users(seeded.active_space())
    manifest = newest_model(home / "models" / MODEL_NAME, space=seeded.active_space())
    transports = ("auto", "grpc") if args.grpc_only_too else ("auto",)
    runs = [Run(f"{model}/{'ring' if transport == 'auto' else 'grpc'}", model, transport)
            for transport in transports for model in ("cascade", "full")]
    try:
        for run in runs:
            print(f"starting {run.name}...", flush=True)
            start(run, home, store, args.keep, users, args.threads)
        print(f"\nramp: {step_s:.0f} s a step, P99 <= {P99_LIMIT_MS:.0f} ms and >= 99% full answers to pass", flush=True)
        ramp(runs, spec.users, step_s)
        print(f"\nat the sustained rates: {blocks} blocks of {block_s:.0f} s each, alternating", flush=True)
        at_sustained_rate(runs, spec.users, block_s, blocks)
        cascade_run = runs[0]
        assert cascade_run.config is not None
        cross_check = h2load_check(cascade_run.config.gateway_address, cascade_run.sustained or RAMP[0], step_s, spec.users)
    finally:
        for run in runs:
            if run.stack is not None:
                run.stack.stop()
    assert manifest is not None
    flops = flop_efficiency(manifest, args.keep, threads=args.threads, rounds=5 if args.quick else 15)

    print(f"\n{'stack':<14} {'sustained/s':>11} {'P50 ms':>7} {'P99 ms':>7} {'P99/P50':>7} {'not full':>8} "
          f"{'CPU ms/feed':>11} {'attributed':>10}")
    figures: dict[str, dict] = {}
    for run in runs:
        p50, p99 = run.at_rate.percentiles()
        served = max(run.at_rate.served, 1)
        cpu_ms = run.cpu_s * 1e3 / served
        attributed = float(np.mean(run.attributed_ms)) if run.attributed_ms else float("nan")
        figures[run.name] = {"sustained_rps": run.sustained, "p50_ms": p50, "p99_ms": p99, "cpu_ms_per_feed": cpu_ms,
                             "attributed_cpu_ms_per_feed": attributed, "degraded_share": run.at_rate.degraded_share,
                             "outcomes": dict(run.at_rate.outcomes),
                             "hops_ms": {k: run.hop_ms[k] / run.hops[k] for k in sorted(run.hops)}}
        print(f"{run.name:<14} {run.sustained:11.0f} {p50:7.1f} {p99:7.1f} {p99 / p50:7.2f} {run.at_rate.degraded_share:8.1%} "
              f"{cpu_ms:11.2f} {attributed:10.2f}")
    for run in runs:
        print(f"mean hop ms ({run.name}): " + ", ".join(f"{k} {v:.2f}" for k, v in figures[run.name]["hops_ms"].items()))
    print(cross_check)
    print(f"model run: {flops['model_ms']:.2f} ms for {args.keep} candidates ({flops['model_gflops']:.1f} GFLOP/s), "
          f"{flops['model_ms_all']:.2f} ms for 2,400 ({flops['model_gflops_all']:.1f} GFLOP/s); plain MatMul "
          f"{flops['roofline_gflops']:.1f} GFLOP/s")
    new, base = figures["cascade/ring"], figures["full/ring"]
    result = {
        "sustained_rps": new["sustained_rps"], "sustained_rps_baseline": base["sustained_rps"],
        "throughput_ratio": new["sustained_rps"] / base["sustained_rps"] if base["sustained_rps"] else float("nan"),
        "cpu_ms_per_feed": new["cpu_ms_per_feed"], "cpu_ms_per_feed_baseline": base["cpu_ms_per_feed"],
        "full_p50_ms": new["p50_ms"], "full_p99_ms": new["p99_ms"], "degraded_share": new["degraded_share"],
        "flop_efficiency": flops["flop_efficiency"], "quality_ratio": quality.get("quality_ratio", float("nan")),
    }
    record("load", {**result, "stacks": figures, "flops": flops, "quality": quality,
                    "keep": args.keep, "step_s": step_s, "block_s": block_s, "blocks": blocks, "h2load": cross_check})
    print(result_line({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
