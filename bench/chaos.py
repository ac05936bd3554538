"""Faults under load: kill -9 each service in turn while feeds and interactions run at a fixed rate.

The real stack as child processes, with mutual TLS and API keys as `feedserve up` runs it, two paramserver
shards, the ranker and the generator colocated with the gateway (rings on). An open-loop asyncio driver
sends Feed and Interact at fixed rates (latency counts from each request's scheduled send time). In turn:

  paramserver         kill -9 both shards, then restart them (a supervisor's job, done here at once)
  ranker              kill -9 the ranker, then restart it
  generator           kill -9 the generator, then restart it
  paramserver shard   kill -9 one of the two shards, then restart it
  ranker dispatcher   SIGUSR2 (FEEDSERVE_TEST_HOOKS=1): one ring dispatcher thread dies as of a bug

Each fault's window lasts --fault-s seconds from the kill. Measured:
  - acked_lost: acknowledged interactions missing from the catalog's event log, read back after the run;
  - answered_share_during_faults: feeds answered (full, or flagged degraded) over feeds sent in the windows;
  - recovery_s per fault: from the kill to the completion of the last feed in the window that was not full.

Before the faults, a hostile tenant (bench/hostile_tenant.py): one tenant floods Feed and Generate with hostile
requests at 10x its quota while another tenant's feeds are measured, in alternating blocks alone / under attack:
  - victim_p99_ratio: the victim's P99 under attack over its P99 alone (target <= 1.5);
  - victim_answered_share: the victim's feeds answered in full under attack over those sent (target >= 0.99).

    python bench/chaos.py [--quick] [--fault-s 60] [--feed-rate 30] [--interact-rate 10] [--hostile-block-s 15]

With --replicas, two of everything on one PostgreSQL instead, each replica killed in turn (bench/replicas.py):

    python bench/chaos.py --replicas [--quick] [--fault-s 60] [--feed-rate 30] [--min-feeds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import fault_windows, machine, prepare_catalog, record, result_line  # noqa: E402
from bench.hostile_tenant import HostileTenant, measure_victim  # noqa: E402
from catalog import open_store  # noqa: E402
from cli.access import admin_key_path  # noqa: E402
from cli.certificates import ensure_certificates  # noqa: E402
from cli.stack import Stack, free_ports  # noqa: E402
from engines.sentence import ensure_encoder  # noqa: E402
from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from gateway.keys import KeyStore  # noqa: E402
from generator.training import ensure_tiers  # noqa: E402
from mesh import security  # noqa: E402
from mesh.config import StackConfig, default_home  # noqa: E402

FAULTS = ("paramserver", "ranker", "generator", "paramserver shard", "ranker dispatcher")


@dataclass
class Outcomes:
    """Every request the driver sent: when it was due, when it ended, and how."""

    feeds: list[tuple[float, float, str]] = field(default_factory=list)  # (due, done, "full"|"degraded"|code)
    acked: list[int] = field(default_factory=list)  # catalog sequences of acknowledged interactions
    interact_errors: int = 0


async def drive(address: str, key: str, feed_rate: float, interact_rate: float, users: int, items: int,
                stop: threading.Event, out: Outcomes) -> None:
    """Open loop: Feed at `feed_rate`, Interact at `interact_rate`, until `stop`."""
    rng = np.random.default_rng(7)
    metadata = (("authorization", f"Bearer {key}"),)
    async with security.open_aio_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def feed(due: float, user: int) -> None:
            try:
                reply = await stub.Feed(gateway_pb2.FeedRequest(user_id=user, k=20, context=common_pb2.RequestContext(
                    feature_tag="chaos")), timeout=1.0, metadata=metadata)
                outcome = "degraded" if reply.degraded else "full"
            except grpc.aio.AioRpcError as error:
                outcome = error.code().name
            out.feeds.append((due, time.monotonic(), outcome))

        async def interact(user: int, item: int) -> None:
            try:
                reply = await stub.Interact(gateway_pb2.InteractRequest(
                    user=str(user), item=str(item), event=common_pb2.EVENT_TYPE_CLICK), timeout=2.0, metadata=metadata)
                out.acked.append(reply.sequence)
            except grpc.aio.AioRpcError:
                out.interact_errors += 1  # not acknowledged: it may or may not be logged

        tasks: set[asyncio.Task] = set()
        start = time.monotonic()
        sent_feeds = sent_interactions = 0
        while not stop.is_set():
            now = time.monotonic() - start
            while sent_feeds < now * feed_rate:
                task = asyncio.ensure_future(feed(start + sent_feeds / feed_rate, int(rng.integers(1, users + 1))))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent_feeds += 1
            while sent_interactions < now * interact_rate:
                task = asyncio.ensure_future(interact(int(rng.integers(1, users + 1)), int(rng.integers(1, items + 1))))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent_interactions += 1
            await asyncio.sleep(0.005)  # the driver's tick (open loop: due times do not drift with it)
        await asyncio.gather(*tasks, return_exceptions=True)


def inflict(stack: Stack, fault: str, shard_addresses: list[str]) -> None:
    """Kill -9 (or the dispatcher hook), then restart what died, as a supervisor would."""
    if fault == "ranker dispatcher":
        ranker = next(s for s in stack.services if s.name == "ranker")
        ranker.process.send_signal(signal.SIGUSR2)
        return
    if fault == "paramserver":
        victims = [s for s in stack.services if s.name == "paramserver"]
    elif fault == "paramserver shard":
        victims = [s for s in stack.services if s.name == "paramserver" and s.address == shard_addresses[-1]]
    else:
        victims = [s for s in stack.services if s.name == fault]
    for victim in victims:
        victim.process.send_signal(signal.SIGKILL)
    for victim in victims:
        victim.process.wait()
    for victim in victims:
        stack.restart(victim.name, timeout=120, address=victim.address)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s per fault, a smaller catalog")
    parser.add_argument("--fault-s", type=float, default=60.0, help="seconds each fault window lasts (default: %(default)s)")
    parser.add_argument("--feed-rate", type=float, default=30.0, help="feeds per second (default: %(default)s)")
    parser.add_argument("--interact-rate", type=float, default=10.0, help="interactions per second (default: %(default)s)")
    parser.add_argument("--hostile-block-s", type=float, default=15.0,
                        help="seconds of each victim-alone and victim-under-attack block (default: %(default)s)")
    parser.add_argument("--hostile-only", action="store_true", help="measure the hostile tenant, then stop (no faults)")
    parser.add_argument("--home", type=Path, default=default_home() / "bench-chaos")
    parser.add_argument("--replicas", action="store_true",
                        help="two gateways, two rankers, two paramserver shards and a generator on PostgreSQL, each "
                             "with its own home; kill -9 one replica of each kind in turn (bench/replicas.py)")
    parser.add_argument("--min-feeds", type=int, default=30,
                        help="with --replicas: the bad canary's guardrail sample per side (default: %(default)s)")
    args = parser.parse_args()
    if args.replicas:
        from bench.replicas import run

        return run(args)
    fault_s = 10.0 if args.quick else args.fault_s
    block_s, blocks = (8.0, 4) if args.quick else (args.hostile_block_s, 6)
    items, users, interactions = (5_000, 500, 30_000) if args.quick else (20_000, 2_000, 120_000)
    home = args.home / f"{items}"
    store = prepare_catalog(home, items, users, interactions)
    ensure_tiers(home, sys.stderr)
    ensure_encoder(home)
    tls = ensure_certificates(home / "tls")
    security.configure(tls["operator"])
    key = admin_key_path(home).read_text().strip()
    keys = KeyStore(store)
    tenants = HostileTenant(keys.create("victim", label="bench/chaos")[1], keys.create("attacker", label="bench/chaos")[1])
    keys.close()
    os.environ["FEEDSERVE_TEST_HOOKS"] = "1"  # children: SIGUSR2 kills a ring dispatcher
    ports = free_ports(5)
    config = StackConfig(gateway_port=ports[0], paramserver_port=ports[1], ranker_port=ports[3], generator_port=ports[4])
    # no quota for the fault driver's tenant (this measures recovery from faults); the shipped default for the victim,
    # and a tenth of its flood for the attacker
    quotas = ("--tenant-quota", "0:0:0", "--tenant-quota-for", "victim=200:400:8",
              "--tenant-quota-for", tenants.attacker_quota)
    stack = Stack(home, store, "simulator", config, home / "logs", generator_home=home, tls=tls, auth=True,
                  api_key=key, paramserver_shards=2, extra_args={"gateway": quotas})
    print(f"chaos: {len(FAULTS)} faults x {fault_s:.0f} s; {args.feed_rate:g} feeds/s and {args.interact_rate:g} "
          f"interactions/s; {items:,} items, {users:,} users; mutual TLS, API keys, 2 paramserver shards; {machine()}",
          flush=True)
    stack.start(timeout=120)
    try:
        print(f"hostile tenant: victim {tenants.victim_rate:g} feeds/s; attacker {tenants.attack_rate:g} hostile "
              f"requests/s against a quota of {tenants.attacker_quota}; {blocks} blocks of {block_s:g} s", flush=True)
        processes = {f"{s.name}{i}" if s.name == "paramserver" else s.name: s.process.pid
                     for i, s in enumerate(stack.services)}
        hostile, attacker = measure_victim(config.gateway_address, tenants, block_s, blocks, users, tls["operator"],
                                           processes)
    except BaseException:
        stack.stop()
        raise
    if args.hostile_only:
        stack.stop()
        return _report_hostile(hostile, attacker, block_s, blocks)
    shard_addresses = [s.address for s in stack.services if s.name == "paramserver"]
    first_sequence = open_store(store).sequence()
    out, stop = Outcomes(), threading.Event()
    driver = threading.Thread(target=lambda: asyncio.run(drive(config.gateway_address, key, args.feed_rate,
                                                                args.interact_rate, users, items, stop, out)))
    windows: list[tuple[str, float, float]] = []
    try:
        driver.start()
        time.sleep(3.0)  # steady load before the first fault (wall-clock pacing of a benchmark, not a test)
        for fault in FAULTS:
            start = time.monotonic()
            inflict(stack, fault, shard_addresses)
            serving = time.monotonic() - start
            left = start + fault_s - time.monotonic()
            if left > 0:
                time.sleep(left)  # the rest of the window under load
            windows.append((fault, start, start + fault_s))
            print(f"  {fault:<18} killed; serving again after {serving:5.1f} s (window {fault_s:.0f} s)", flush=True)
        stop.set()
        driver.join(60)
    finally:
        stop.set()
        stack.stop()

    logged = set(open_store(store).events(after=first_sequence)["seq"].tolist())
    acked_lost = sum(1 for seq in out.acked if seq not in logged)
    rows, answered_total, sent_total = fault_windows(windows, out.feeds)
    recoveries = [row[4] for row in rows]
    print(f"interactions acknowledged {len(out.acked)}, not acknowledged {out.interact_errors}, "
          f"acknowledged but missing from the log {acked_lost}")
    _print_victim(hostile)
    result = {"acked_lost": acked_lost, "answered_share_during_faults": answered_total / max(sent_total, 1),
              "recovery_s_max": max(recoveries) if recoveries else 0.0,
              "victim_p99_ratio": hostile["victim_p99_ratio"], "victim_answered_share": hostile["victim_answered_share"]}
    record("chaos", {**result, "faults": {r[0]: {"feeds": r[1], "answered": r[2], "degraded": r[3], "recovery_s": r[4]}
                                          for r in rows}, "acked": len(out.acked), "fault_s": fault_s,
                     "hostile": {**hostile, "attacker": attacker, "block_s": block_s, "blocks": blocks}})
    print(result_line({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))
    met = result["acked_lost"] == 0 and result["answered_share_during_faults"] >= 0.99 and result["recovery_s_max"] <= 5
    print("targets (acked_lost = 0, answered_share_during_faults >= 0.99, recovery_s_max <= 5): "
          + ("met" if met else "MISSED"))
    _print_hostile_targets(hostile)
    return 0


def _print_victim(hostile: dict[str, float]) -> None:
    print(f"victim P50/P99 alone {hostile['victim_p50_alone_ms']:.1f}/{hostile['victim_p99_alone_ms']:.1f} ms, under "
          f"attack {hostile['victim_p50_attacked_ms']:.1f}/{hostile['victim_p99_attacked_ms']:.1f} ms; degraded under "
          f"attack {hostile['victim_degraded_share']:.4f}")


def _print_hostile_targets(hostile: dict[str, float]) -> None:
    met = hostile["victim_p99_ratio"] <= 1.5 and hostile["victim_answered_share"] >= 0.99
    print("targets (victim_p99_ratio <= 1.5, victim_answered_share >= 0.99): " + ("met" if met else "MISSED"))


def _report_hostile(hostile: dict[str, float], attacker: dict[str, int], block_s: float, blocks: int) -> int:
    """--hostile-only: the victim's figures alone, recorded as chaos-hostile."""
    _print_victim(hostile)
    result = {"victim_p99_ratio": hostile["victim_p99_ratio"], "victim_answered_share": hostile["victim_answered_share"]}
    record("chaos-hostile", {**hostile, "attacker": attacker, "block_s": block_s, "blocks": blocks})
    print(result_line({k: round(v, 4) for k, v in result.items()}))
    _print_hostile_targets(hostile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
