"""A hostile tenant beside a victim: one tenant floods Feed and Generate with hostile requests at 10x its quota
while another tenant's feeds are measured, in alternating blocks (victim alone, victim under attack).

Used by bench/chaos.py on its running stack. The attacker runs in its own process, so that its client's work
does not slow the victim's client (on a small machine they still share the cores with the stack, as a real
attacker's traffic shares the gateway's). The victim's latency counts from each feed's scheduled send time
(open loop); a degraded feed is counted as degraded, never as answered.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.common import p50_p99, process_cpu_s
from bench.patterns import HOSTILE
from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generator_pb2
from mesh import security

__all__ = ["HostileTenant", "hostile_requests", "measure_victim"]


@dataclass(frozen=True)
class HostileTenant:
    """The two tenants' keys and rates: the attacker sends `attack_rate` requests/s against a quota of
    `attack_rate / 10` calls/s (the gateway's --tenant-quota-for attacker=...)."""

    victim_key: str
    attacker_key: str
    victim_rate: float = 20.0
    attack_rate: float = 200.0

    @property
    def attacker_quota(self) -> str:
        rate = max(int(self.attack_rate / 10), 1)
        return f"attacker={rate}:{2 * rate}:4"


def hostile_requests(n: int) -> tuple[str, object]:
    """The n-th request of the attacker: exploding patterns, lists past their caps, new tags every time, real
    generations (that take slots), and feeds with the longest lists allowed."""
    tag = f"flood-{n}"
    kind = n % 5
    if kind == 0:
        return "generate", generator_pb2.GenerateRequest(prompt=f"x {n}", max_tokens=8, pattern=HOSTILE[n % len(HOSTILE)],
                                                         context=common_pb2.RequestContext(feature_tag=tag))
    if kind == 1:
        return "generate", generator_pb2.GenerateRequest(prompt=f"Write a long post number {n}", max_tokens=64,
                                                         context=common_pb2.RequestContext(feature_tag=tag))
    if kind == 2:
        return "feed", gateway_pb2.FeedRequest(user_id=1 + n % 100, k=100, exclude_ids=range(1_001))
    if kind == 3:
        return "feed", gateway_pb2.FeedRequest(user_id=1 + n % 100, k=100, exclude_ids=range(1_000),
                                               include_labels=[f"l{i}" for i in range(1_000)],
                                               context=common_pb2.RequestContext(feature_tag=tag))
    return "feed", gateway_pb2.FeedRequest(user_id=1 + n % 100, k=20, context=common_pb2.RequestContext(feature_tag="é" * 70))


async def _open_loop(rate: float, seconds: float, send: Callable[[int, float], Awaitable[None]]) -> int:
    """Call `send(n, due)` at `rate` per second for `seconds`, each at its due time whatever the others take (open
    loop); waits for the last to end and returns how many were sent."""
    tasks: set[asyncio.Task] = set()
    start, sent = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        while sent < (time.monotonic() - start) * rate:
            task = asyncio.ensure_future(send(sent, start + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.005)  # the driver's tick (open loop: due times do not drift with it)
    await asyncio.gather(*tasks, return_exceptions=True)
    return sent


def _attack(address: str, key: str, rate: float, seconds: float, tls: tuple[str, str, str] | None,
            counts: multiprocessing.Queue) -> None:
    """The attacker's process: open loop at `rate` for `seconds`; puts {status: count} on `counts`. (It shares this
    machine's cores with the stack; niced, it sent in bursts, which was no fairer a measure.)"""
    security.configure(security.Tls(*(Path(p) for p in tls)) if tls else None)
    seen: dict[str, int] = {}

    async def one(n: int, stub: gateway_pb2_grpc.GatewayStub) -> None:
        kind, request = hostile_requests(n)
        metadata = (("authorization", f"Bearer {key}"),)
        try:
            if kind == "feed":
                await stub.Feed(request, timeout=5, metadata=metadata)
            else:
                async for _ in stub.Generate(request, timeout=5, metadata=metadata):
                    pass
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        seen[code] = seen.get(code, 0) + 1

    async def flood() -> None:
        async with security.open_aio_channel(address) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            await _open_loop(rate, seconds, lambda n, due: one(n, stub))

    asyncio.run(flood())
    counts.put(seen)


@dataclass
class VictimBlock:
    attacked: bool
    latencies_ms: list[float] = field(default_factory=list)  # full answers only
    sent: int = 0
    degraded: int = 0
    failed: dict[str, int] = field(default_factory=dict)


async def _victim(address: str, key: str, rate: float, seconds: float, users: int, block: VictimBlock,
                  rng: np.random.Generator) -> None:
    metadata = (("authorization", f"Bearer {key}"),)
    async with security.open_aio_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def feed(n: int, due: float) -> None:
            try:
                reply = await stub.Feed(gateway_pb2.FeedRequest(user_id=int(rng.integers(1, users + 1)), k=20),
                                        timeout=2.0, metadata=metadata)
                if reply.degraded:
                    block.degraded += 1
                else:
                    block.latencies_ms.append((time.monotonic() - due) * 1e3)
            except grpc.aio.AioRpcError as error:
                block.failed[error.code().name] = block.failed.get(error.code().name, 0) + 1

        block.sent = await _open_loop(rate, seconds, feed)


def measure_victim(address: str, tenants: HostileTenant, block_s: float, blocks: int, users: int,
                   tls: security.Tls | None, processes: dict[str, int] | None = None
                   ) -> tuple[dict[str, float], dict[str, int]]:
    """After a warm-up (the victim alone, not counted: first connections, caches), alternate blocks of the victim
    alone and under attack: the victim's figures (P50/P99 alone and under attack, their ratio, the answered and
    degraded shares under attack), and the attacker's answers by status. Each block also prints the CPU seconds
    each of `processes` (name: pid) and the attacker's process used, to show where an attack's cost lands."""
    processes = processes or {}
    spawn = multiprocessing.get_context("spawn")
    paths = (str(tls.ca), str(tls.cert), str(tls.key)) if tls is not None else None
    # one draw of users across all blocks: each block asks for new users as often as the others (a block that
    # repeated the previous one's users would be answered from the gateway's feed cache, the others not)
    rng = np.random.default_rng(11)
    asyncio.run(_victim(address, tenants.victim_key, tenants.victim_rate, block_s, users, VictimBlock(attacked=False),
                        rng))
    done: list[VictimBlock] = []
    attacker_seen: dict[str, int] = {}
    for index in range(blocks):
        block = VictimBlock(attacked=index % 2 == 1)
        cpu_before = {name: process_cpu_s([pid]) for name, pid in processes.items()}
        attacker = None
        counts: multiprocessing.Queue = spawn.Queue()
        if block.attacked:
            attacker = spawn.Process(target=_attack, args=(address, tenants.attacker_key, tenants.attack_rate, block_s,
                                                           paths, counts))
            attacker.start()
        asyncio.run(_victim(address, tenants.victim_key, tenants.victim_rate, block_s, users, block, rng))
        cpu = {name: process_cpu_s([pid]) - cpu_before[name] for name, pid in processes.items()}
        if attacker is not None:
            for code, count in counts.get(timeout=120).items():
                attacker_seen[code] = attacker_seen.get(code, 0) + count
            cpu["attacker client"] = process_cpu_s([attacker.pid]) if attacker.pid is not None else 0.0  # not reaped
            attacker.join(60)
        done.append(block)
        p50, p99 = p50_p99(block.latencies_ms) if block.latencies_ms else (float("nan"), float("nan"))
        print(f"  victim {'under attack' if block.attacked else 'alone':<13} sent {block.sent:>5}  full "
              f"{len(block.latencies_ms):>5}  degraded {block.degraded:>3}  failed {sum(block.failed.values()):>3} "
              f"{block.failed or ''}  P50 {p50:6.1f} ms  P99 {p99:6.1f} ms", flush=True)
        if cpu:
            print("    CPU s: " + "  ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items()), flush=True)
    alone = [ms for b in done if not b.attacked for ms in b.latencies_ms]
    attacked = [b for b in done if b.attacked]
    under = [ms for b in attacked for ms in b.latencies_ms]
    (alone_p50, alone_p99), (under_p50, under_p99) = p50_p99(alone), p50_p99(under)
    sent_under = sum(b.sent for b in attacked)
    print(f"  attacker's answers: {dict(sorted(attacker_seen.items()))} ({sum(attacker_seen.values()) / max(blocks // 2 * block_s, 1):.0f} "
          f"requests/s sent)")
    return {"victim_p50_alone_ms": alone_p50, "victim_p99_alone_ms": alone_p99, "victim_p50_attacked_ms": under_p50,
            "victim_p99_attacked_ms": under_p99, "victim_p99_ratio": under_p99 / alone_p99,
            "victim_answered_share": len(under) / max(sent_under, 1),
            "victim_degraded_share": sum(b.degraded for b in attacked) / max(sent_under, 1)}, attacker_seen
