"""The model lifecycle on the live stack under a fixed load: train v2 over the served space, load it beside the primary
as a shadow (alternating blocks of shadow scoring off and on), canary it at 10%, promote it, then canary a deliberately
bad v3 (shuffled weights) and watch the guardrails roll it back.

The load is an open-loop asyncio driver over the simulator's users at a fixed rate; after each full feed the user
examines the first ten items and clicks, likes or skips them as the simulator's hidden tastes say (the same logit the
world's event log was drawn with, with a position bias), each Interact naming the feed, so that every version has
online metrics. Degraded answers and errors are counted apart; latencies are of full answers only.

    RESULT swap_p99_ratio shadow_p99_ratio errors rollback_s bad_canary_exposed_share (+ degraded)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine, open_loop, prepare_catalog, process_cpu_s, record, result_line  # noqa: E402
from catalog import USER, open_store, preset_schema  # noqa: E402
from cli.stack import Stack, free_ports  # noqa: E402
from engines.sentence import DIM  # noqa: E402
from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from learning.refresh import export_shuffled, train_on_served_space  # noqa: E402
from learning.training import MODEL_NAME  # noqa: E402
from mesh.config import StackConfig, default_home  # noqa: E402
from mesh.percentiles import p50_p99  # noqa: E402
from world import WorldSpec, ensure_world  # noqa: E402

FAMILY = MODEL_NAME
EXAMINED = 10  # positions a simulated user looks at


@dataclass
class Feeds:
    """Every feed the driver sent: (due, done, outcome, version); outcome is full, degraded or error."""

    rows: list[tuple[float, float, str, str]] = field(default_factory=list)
    handled_ms: dict[float, float] = field(default_factory=dict)  # due -> the gateway's own handling (its hop)
    interactions: int = 0
    interaction_errors: int = 0

    def full_p99_ms(self, windows: list[tuple[float, float]], server: bool = False) -> tuple[float, int]:
        """P99 of full feeds due in the windows: as the client saw them (from the scheduled send), or as the
        gateway handled them (its `handle` hop: without the driver's own delays)."""
        latencies = [self.handled_ms[due] if server else (done - due) * 1e3 for due, done, outcome, _ in self.rows
                     if outcome == "full" and any(a <= due < b for a, b in windows)]
        return (p50_p99(latencies)[1] if latencies else float("nan")), len(latencies)


class Simulated:
    """The simulator's users as readers: a click's logit is the world's own (taste . item, freshness, popularity),
    less a bias for lower positions; a like follows a click as the world's likes do."""

    def __init__(self, world, seed: int = 0) -> None:
        self.tastes, self.items = np.asarray(world.user_tastes), np.asarray(world.item_embeddings)
        self.popularity, self.published = np.asarray(world.item_popularity), np.asarray(world.item_published)
        self.rng = np.random.default_rng(seed)

    def react(self, user: int, external_items: list[str]) -> list[tuple[int, int]]:
        """(position, event) for each examined item the user reacts to (user: the world's 0-based index)."""
        rows = np.array([int(i) - 1 for i in external_items[:EXAMINED]])
        if not len(rows):
            return []
        affinity = self.items[rows] @ self.tastes[user]
        age_days = (time.time() - self.published[rows]) / 86400
        logit = (5.0 * affinity - 2.0 + 0.8 * np.exp(-np.clip(age_days, 0, None) / 7)
                 + 0.15 * np.log1p(self.popularity[rows]) - 0.35 * np.arange(len(rows)))
        draws = self.rng.random((2, len(rows)))
        clicked = draws[0] < 1 / (1 + np.exp(-logit))
        liked = clicked & (draws[1] < 1 / (1 + np.exp(-(6.0 * affinity - 2.5))))
        reactions = [(p, int(common_pb2.EVENT_TYPE_LIKE if liked[p] else common_pb2.EVENT_TYPE_CLICK))
                     for p in np.flatnonzero(clicked).tolist()]
        if not clicked[0]:
            reactions.append((0, int(common_pb2.EVENT_TYPE_SKIP)))
        return reactions


async def drive(address: str, rate: float, users: np.ndarray, reader: Simulated, stop: threading.Event,
                out: Feeds) -> None:
    """Feeds at `rate` per second (open loop: latency from the scheduled time) for random users, and their reactions."""
    rng = np.random.default_rng(7)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def interact(user_id: int, item_id: int, event: int, feed: str) -> None:
            try:
                request = gateway_pb2.InteractRequest(user_id=user_id, item_id=item_id, event=event,  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
                                                      feed_request_id=feed)
                await stub.Interact(request, timeout=2.0)
                out.interactions += 1
            except grpc.aio.AioRpcError:
                out.interaction_errors += 1

        async def one(due: float, index: int) -> None:
            user_id = int(users[index])
            try:
                reply = await stub.Feed(gateway_pb2.FeedRequest(user_id=user_id, k=20), timeout=2.0)
            except grpc.aio.AioRpcError:
                out.rows.append((due, time.monotonic(), "error", ""))
                return
            done = time.monotonic()
            out.rows.append((due, done, "degraded" if reply.degraded else "full", reply.model_version))
            out.handled_ms[due] = next(((h.end_ns - h.start_ns) / 1e6 for h in reply.hops
                                        if h.service == "gateway" and h.stage == "handle"), float("nan"))
            if reply.degraded or reply.cached:
                return
            for position, event in reader.react(index, [item.id for item in reply.items]):
                asyncio.ensure_future(interact(user_id, reply.items[position].item_id, event, reply.request_id))

        await open_loop(rate, stop, lambda due: one(due, int(rng.integers(len(users)))))


def admin(address: str):
    return gateway_pb2_grpc.GatewayAdminStub(grpc.insecure_channel(address))


def version_info(stub, version: str) -> gateway_pb2.ModelVersionInfo:
    listed = stub.ListModels(gateway_pb2.ListModelsRequest(family=FAMILY), timeout=10)
    return next(v for v in listed.families[0].versions if v.version == version)


def wait_until(check, timeout: float, poll_s: float = 0.25) -> float:
    """Poll `check()` (an admin call) until true; returns when it first was (a benchmark's pacing, not a test's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(poll_s)
    raise TimeoutError(f"not reached in {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="5 s blocks, 4 shadow off/on pairs, a 5,000-item catalog (the full run: 10 s, 8, 20,000)")
    parser.add_argument("--rate", type=float, default=40.0, help="feeds per second (default: %(default)s)")
    parser.add_argument("--shadow-sample", type=float, default=0.25,
                        help="share of requests the shadow scores in its 'on' blocks (default: %(default)s)")
    parser.add_argument("--min-feeds", type=int, default=30,
                        help="the canary guardrails' minimum sample per side (default: %(default)s)")
    parser.add_argument("--block-s", type=float, default=0.0, help="seconds per block (default: 5 quick, 15 full)")
    parser.add_argument("--alternations", type=int, default=0,
                        help="shadow off/on block pairs (default: 2 quick, 4 full)")
    parser.add_argument("--home", type=Path, default=default_home() / "bench-rollout")
    args = parser.parse_args()
    block = args.block_s or (5.0 if args.quick else 10.0)
    alternations = args.alternations or (4 if args.quick else 8)
    items, users, interactions = (5_000, 500, 30_000) if args.quick else (20_000, 2_000, 120_000)
    home = args.home / f"{items}"
    store_url = prepare_catalog(home, items, users, interactions)
    world = ensure_world(WorldSpec(items=items, users=users, interactions=interactions), home, quiet=True)
    store = open_store(store_url)
    root = home / "models" / FAMILY
    print(f"rollout: {args.rate:g} feeds/s, blocks of {block:.0f} s; {items:,} items, {users:,} users; {machine()}",
          flush=True)

    ports = free_ports(5)
    config = StackConfig(gateway_port=ports[0], paramserver_port=ports[1], ranker_port=ports[3], generator_port=ports[4])
    os.environ["FEEDSERVE_TRANSPORT"] = "auto"
    stack = Stack(home, store_url, "simulator", config, home / "logs")
    stack.start(timeout=180)
    stub = admin(config.gateway_address)
    primary = next(v.version for v in stub.ListModels(gateway_pb2.ListModelsRequest(family=FAMILY), timeout=10)
                   .families[0].versions if v.state == "primary")
    started = time.monotonic()  # the stack serves its primary; v2 is trained beside it (before the load starts)
    v2 = train_on_served_space(store, preset_schema("simulator"), root, DIM, epochs=2, seed=int(time.time()) % 1000,
                               stream=sys.stderr)
    print(f"1. trained {FAMILY}/{v2.version} over the served space in {time.monotonic() - started:.1f} s", flush=True)

    def guardrails(registry) -> None:  # configuration, as an operator would set it for a small canary
        registry.family(FAMILY).guardrails.min_feeds = args.min_feeds
    store.change_registry(guardrails)

    numeric = store.resolve(USER, [str(u) for u in world.user_ids.tolist()])
    reader = Simulated(world)
    out, stop = Feeds(), threading.Event()
    driver = threading.Thread(target=lambda: asyncio.run(drive(config.gateway_address, args.rate, numeric, reader,
                                                                stop, out)))
    gc.collect()
    gc.freeze()  # the driver's own collector pauses would be measured as the stack's tail
    gc.disable()
    marks: dict[str, list[tuple[float, float]]] = {"before": [], "swap": [], "loading": [], "switched": [],
                                                   "shadow_off": [], "shadow_on": []}
    ranker_pid = [s.process.pid for s in stack.services if s.name == "ranker"]
    ranker_cpu = {"shadow_off": 0.0, "shadow_on": 0.0}
    try:
        driver.start()
        time.sleep(block)  # warm-up under load (a benchmark's pacing)
        t = time.monotonic()
        time.sleep(block)
        marks["before"].append((t, time.monotonic()))
        print(f"   baseline: primary {FAMILY}/{primary}", flush=True)

        stub.StageModel(gateway_pb2.StageModelRequest(directory=str(v2.directory)), timeout=30)
        t = time.monotonic()
        stub.ShadowModel(gateway_pb2.ModelVersionRequest(family=FAMILY, version=v2.version, sample=0.0), timeout=30)
        loaded = wait_until(lambda: version_info(stub, v2.version).resident, 300)
        marks["loading"].append((t, loaded))
        time.sleep(block)
        marks["swap"].append((t, time.monotonic()))
        marks["switched"].append((loaded, time.monotonic()))
        print(f"2. {FAMILY}/{v2.version} loaded beside the primary as its shadow in {loaded - t:.1f} s", flush=True)

        for _ in range(alternations):  # alternating blocks: shadow scoring off, then on
            for name, sample in (("shadow_off", 0.0), ("shadow_on", args.shadow_sample)):
                stub.ShadowModel(gateway_pb2.ModelVersionRequest(family=FAMILY, version=v2.version, sample=sample),
                                 timeout=30)
                time.sleep(0.5)  # the services read the registry within 0.2 s
                t, cpu = time.monotonic(), process_cpu_s(ranker_pid)
                time.sleep(block)
                marks[name].append((t, time.monotonic()))
                ranker_cpu[name] += process_cpu_s(ranker_pid) - cpu
        shadow = stub.ListModels(gateway_pb2.ListModelsRequest(family=FAMILY), timeout=10).families[0].shadow
        print(f"   ranker CPU per second: shadow off {ranker_cpu['shadow_off'] / (alternations * block):.3f} s, "
              f"on {ranker_cpu['shadow_on'] / (alternations * block):.3f} s", flush=True)
        print(f"   shadow: {shadow.compared} requests compared ({shadow.dropped} let go), Spearman {shadow.spearman:.3f}, "
              f"overlap@20 {shadow.overlap_at_20:.3f}, score shift {shadow.score_shift:+.4f}", flush=True)

        stub.CanaryModel(gateway_pb2.CanaryRequest(family=FAMILY, version=v2.version, share=0.1), timeout=30)
        time.sleep(2 * block)
        print(f"3. {FAMILY}/{v2.version} canary at 10% for {2 * block:.0f} s", flush=True)
        t = time.monotonic()
        stub.PromoteModel(gateway_pb2.ModelVersionRequest(family=FAMILY, version=v2.version), timeout=30)
        time.sleep(block)
        marks["swap"].append((t, time.monotonic()))
        marks["switched"].append((t, time.monotonic()))
        print(f"4. {FAMILY}/{v2.version} promoted", flush=True)

        v3 = export_shuffled(v2, root, seed=int(time.time()) % 1000)
        stub.StageModel(gateway_pb2.StageModelRequest(directory=str(v3.directory)), timeout=30)
        canary_at = time.monotonic()
        stub.CanaryModel(gateway_pb2.CanaryRequest(family=FAMILY, version=v3.version, share=0.1), timeout=30)
        print(f"5. {FAMILY}/{v3.version} (weights shuffled) canary at 10%", flush=True)
        rolled = wait_until(lambda: version_info(stub, v3.version).state == "retired", 120)
        rollback_s = rolled - canary_at
        why = version_info(stub, v3.version).last_change
        print(f"6. rolled back by itself after {rollback_s:.1f} s: {why}", flush=True)
        time.sleep(2.0)
        stop.set()
        driver.join(60)
        listed = stub.ListModels(gateway_pb2.ListModelsRequest(family=FAMILY), timeout=10)
    finally:
        stop.set()
        stack.stop()

    gc.enable()
    before, swap = out.full_p99_ms(marks["before"])[0], out.full_p99_ms(marks["swap"])[0]
    off, on = out.full_p99_ms(marks["shadow_off"])[0], out.full_p99_ms(marks["shadow_on"])[0]
    server = {name: out.full_p99_ms(marks[name], server=True)[0] for name in marks}
    outcomes = [o for _, _, o, _ in out.rows]
    by_version: dict[str, int] = {}
    for _, _, outcome, version in out.rows:
        if outcome != "error":
            by_version[version] = by_version.get(version, 0) + 1
    print(f"{'window':<34} {'full feeds':>10} {'P99 ms':>8} {'gateway P99 ms':>15}")
    for name, key in (("before", "before"), ("swap (loading + switched)", "swap"), ("  loading in the background", "loading"),
                      ("  after each switch", "switched"), ("shadow off", "shadow_off"), ("shadow on", "shadow_on")):
        p99, n = out.full_p99_ms(marks[key])
        print(f"{name:<34} {n:>10} {p99:>8.1f} {server[key]:>15.1f}")
    for name in ("shadow_off", "shadow_on"):
        blocks = [out.full_p99_ms([window])[0] for window in marks[name]]
        print(f"{name} P99 per block (ms): " + " ".join(f"{b:.1f}" for b in blocks))
    print(f"feeds {len(outcomes)}: full {outcomes.count('full')}, degraded {outcomes.count('degraded')}, "
          f"errors {outcomes.count('error')}; interactions {out.interactions} ({out.interaction_errors} failed)")
    print("answered by: " + ", ".join(f"{v} {n}" for v, n in sorted(by_version.items())))
    for v in listed.families[0].versions:
        if v.online.feeds:
            print(f"  {FAMILY}/{v.version:<4} {v.state:<8} feeds {v.online.feeds:>6}  CTR@{v.online.k} "
                  f"{v.online.ctr_at_k:.4f}  likes/feed {v.online.likes_per_feed:.3f}  skips {v.online.skips}")
    result = {
        "swap_p99_ratio": swap / before, "shadow_p99_ratio": on / off, "errors": outcomes.count("error"),
        "rollback_s": rollback_s, "bad_canary_exposed_share": by_version.get(f"{FAMILY}/{v3.version}", 0) / len(outcomes),
        "degraded": outcomes.count("degraded"),
        "swap_p99_ratio_gateway": server["swap"] / server["before"],
        "switch_p99_ratio": out.full_p99_ms(marks["switched"])[0] / before,
        "shadow_p99_ratio_gateway": server["shadow_on"] / server["shadow_off"],
    }
    record("rollout", {**result, "rate": args.rate, "block_s": block, "items": items, "rollback_reason": why,
                       "p99_ms": {name: out.full_p99_ms(marks[name])[0] for name in marks},
                       "gateway_p99_ms": server})
    print(result_line({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))
    met = (result["swap_p99_ratio"] <= 1.2 and result["shadow_p99_ratio"] <= 1.1 and result["errors"] == 0
           and result["rollback_s"] <= 30 and result["bad_canary_exposed_share"] <= 0.1)
    print("targets (swap_p99_ratio <= 1.2, shadow_p99_ratio <= 1.1, errors = 0, rollback_s <= 30, "
          f"bad_canary_exposed_share <= 0.1): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
