"""`bench/chaos.py --replicas`: two of everything on one PostgreSQL, each replica killed in turn under load.

A real PostgreSQL server holds the catalog (copied from the benchmark's prepared catalog), the API keys, the model
registry and every version's files. Two gateways, two rankers, two paramserver shards and one generator run as
separate processes, each with its own HOME and nothing shared but the store (gRPC between them, no rings). A
ranker fetches the version the registry names from the store. Clients spread their feeds over both gateways
(alternating; a gateway that does not answer is retried on the other once, as a client given two endpoints does).

Measured, in order:
  cursor_cross_replica_ok  page 2 asked of the other gateway, against page 2 from the gateway that gave page 1
  revoke_visible_s         a key revoked through gateway A, until gateway B refuses it
  promote_visible_s        a promote through gateway A, until both rankers answer with the new version
  under load, kill -9 then restart (a supervisor's job) of: gateway A, ranker A, paramserver shard 0, generator
    acked_lost, answered_share_during_faults, recovery_s_max (as bench/chaos.py counts them)
  rollbacks                a canary with shuffled weights at 50%, judged by both gateways on their summed counts
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.common import fault_windows, machine, open_loop, prepare_catalog, record, result_line
from bench.rollout import Simulated
from catalog import USER, open_store, preset_schema
from cli.stack import free_ports, wait_serving
from engines.sentence import DIM
from feedserve.v1 import gateway_pb2, gateway_pb2_grpc, ranker_pb2, ranker_pb2_grpc
from gateway.keys import KeyStore
from generator.training import ensure_tiers
from learning.refresh import export_shuffled, train_on_served_space
from mesh.shards import shard_slots
from ranker.exported import MODEL_NAME, newest_model
from tests.postgres import running_postgres
from world import WorldSpec, ensure_world

FAULTS = ("gateway", "ranker", "paramserver", "generator")  # the first replica of each kind, in turn


@dataclass
class Replica:
    name: str  # gateway-0, ranker-1, ...
    address: str
    argv: list[str]
    home: Path
    process: subprocess.Popen | None = None


class Replicas:
    """The processes, each with its own HOME under `root`, the store's URL in its environment."""

    def __init__(self, root: Path, store: str) -> None:
        self.root, self.store = root, store
        self.all: dict[str, Replica] = {}

    def spawn(self, name: str, module: str, port: int, *args: str) -> Replica:
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        address = f"127.0.0.1:{port}"
        replica = Replica(name, address, [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port),
                                          *args], home)
        self.all[name] = replica
        self._start(replica)
        return replica

    def _start(self, replica: Replica) -> None:
        # HOME too: a library's own cache under ~ (ONNX Runtime keeps one in ~/.cache/Microsoft) is then its own
        env = {**os.environ, "HOME": str(replica.home), "FEEDSERVE_HOME": str(replica.home), "FEEDSERVE_STORE": self.store,
               "FEEDSERVE_TRANSPORT": "grpc", "PYTHONUNBUFFERED": "1"}
        for name in ("FEEDSERVE_TLS_CA", "FEEDSERVE_TLS_CERT", "FEEDSERVE_TLS_KEY", "FEEDSERVE_CONFIG"):
            env.pop(name, None)
        with open(replica.home / "service.log", "ab") as log:
            replica.process = subprocess.Popen(replica.argv, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=env, cwd=replica.home)

    def wait(self, name: str, timeout: float = 300.0) -> None:
        replica = self.all[name]
        try:
            wait_serving(replica.address, timeout, replica.process, name)
        except (RuntimeError, TimeoutError) as exc:
            tail = (replica.home / "service.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} did not start: {exc}\n{tail}") from None

    def kill_and_restart(self, name: str) -> None:
        replica = self.all[name]
        assert replica.process is not None
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait()
        self._start(replica)
        self.wait(name)

    def stop(self) -> None:
        for replica in self.all.values():
            if replica.process is not None and replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.all.values():
            if replica.process is not None:
                try:
                    replica.process.wait(15)
                except subprocess.TimeoutExpired:
                    replica.process.kill()


@dataclass
class Outcomes:
    feeds: list[tuple[float, float, str, str]] = field(default_factory=list)  # (due, done, outcome, version)
    acked: list[int] = field(default_factory=list)
    interact_errors: int = 0


class Client:
    """Two endpoints, used alternately; a call the first does not answer (UNAVAILABLE) is retried on the other."""

    def __init__(self, addresses: list[str], token: str) -> None:
        self.addresses, self.metadata = addresses, (("authorization", f"Bearer {token}"),)
        self.turn = 0

    async def __aenter__(self) -> Client:
        self.channels = [grpc.aio.insecure_channel(a, options=[("grpc.initial_reconnect_backoff_ms", 100),
                                                               ("grpc.max_reconnect_backoff_ms", 500)])
                         for a in self.addresses]
        self.stubs = [gateway_pb2_grpc.GatewayStub(c) for c in self.channels]
        return self

    async def __aexit__(self, *_) -> None:
        for channel in self.channels:
            await channel.close()

    async def call(self, method: str, request, timeout: float, first: int | None = None):
        """(reply, the index of the gateway that answered)."""
        if first is None:
            first, self.turn = self.turn, 1 - self.turn
        for index in (first, 1 - first):
            try:
                return await getattr(self.stubs[index], method)(request, timeout=timeout, metadata=self.metadata), index
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or index != first:
                    raise
        raise AssertionError("unreachable")


async def drive(client: Client, rate: float, users: np.ndarray, externals: list[str], reader: Simulated,
                stop: threading.Event, out: Outcomes) -> None:
    """Open loop: feeds at `rate` for random users, their simulated reactions sent to the gateway that served the
    feed (its online counts attribute them)."""
    rng = np.random.default_rng(11)

    async def interact(user: str, item: str, event: int, feed: str, gateway: int) -> None:
        try:  # by the catalog's own ids: logged, with the sequence the acknowledgement names
            reply, _ = await client.call("Interact", gateway_pb2.InteractRequest(
                user=user, item=item, event=event, feed_request_id=feed), 2.0, first=gateway)  # type: ignore[arg-type]
            out.acked.append(reply.sequence)
        except grpc.aio.AioRpcError:
            out.interact_errors += 1  # not acknowledged: it may or may not be logged

    async def one(due: float, index: int) -> None:
        user_id = int(users[index])
        try:
            reply, gateway = await client.call("Feed", gateway_pb2.FeedRequest(user_id=user_id, k=20), 2.0)
        except grpc.aio.AioRpcError as error:
            out.feeds.append((due, time.monotonic(), error.code().name, ""))
            return
        out.feeds.append((due, time.monotonic(), "degraded" if reply.degraded else "full", reply.model_version))
        if not reply.degraded and not reply.cached:
            for position, event in reader.react(index, [item.id for item in reply.items]):
                asyncio.ensure_future(interact(externals[index], reply.items[position].id, event, reply.request_id,
                                               gateway))

    await open_loop(rate, stop, lambda due: one(due, int(rng.integers(len(users)))))


def shard_map(ports: list[int]) -> str:
    """The paramserver's two shards, on the first two of `ports`, as a slot map."""
    return ",".join(f"{shard_slots(f'{i}/2')}=127.0.0.1:{ports[i]}" for i in range(2))


def start_services(replicas: Replicas, ports: list[int], schema: str, *gateway_args: str) -> None:
    """Two paramserver shards, two rankers and two gateways (in that order on the six `ports`), each in its own
    home; the gateways reach both rankers through one address list, balanced, and get `gateway_args`."""
    for i in range(2):
        replicas.spawn(f"paramserver-{i}", "paramserver", ports[i], "--shard", f"{i}/2",
                       "--state-dir", str(replicas.root / f"paramserver-{i}" / "state"))
        replicas.spawn(f"ranker-{i}", "ranker", ports[2 + i], "--schema", schema, "--threads", "1")
    rankers = f"ipv4:127.0.0.1:{ports[2]},127.0.0.1:{ports[3]}"
    for i in range(2):
        replicas.spawn(f"gateway-{i}", "gateway", ports[4 + i], "--paramserver", shard_map(ports), "--ranker", rankers,
                       "--schema", schema, *gateway_args)


def ranker_versions(replicas: Replicas, resident: bool = False) -> list[set[str]]:
    """Per ranker, the version it answers a new user with (or, `resident`, every version it holds loaded)."""
    found = []
    for name in ("ranker-0", "ranker-1"):
        with grpc.insecure_channel(replicas.all[name].address) as channel:
            stub = ranker_pb2_grpc.RankerStub(channel)
            if resident:
                found.append({m.version for m in stub.Models(ranker_pb2.ModelsRequest(), timeout=5).models})
            else:
                found.append({stub.Rank(ranker_pb2.RankRequest(user_id=10**9, k=1), timeout=5).model_version})
    return found


def until(check, timeout: float, poll_s: float = 0.02) -> float:
    """Seconds until `check()` holds (a benchmark's measurement by polling)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not reached in {timeout:.0f} s")
        time.sleep(poll_s)
    return time.monotonic() - start


def run(args) -> int:
    items, users, interactions = (5_000, 500, 30_000) if args.quick else (20_000, 2_000, 120_000)
    fault_s = 10.0 if args.quick else args.fault_s
    rate = args.feed_rate if not args.quick else min(args.feed_rate, 15.0)
    home = args.home / f"{items}"
    prepared = prepare_catalog(home, items, users, interactions)
    world = ensure_world(WorldSpec(items=items, users=users, interactions=interactions), home, quiet=True)
    with tempfile.TemporaryDirectory(prefix="feedserve-replicas-") as tmp:
        os.chmod(tmp, 0o755)  # PostgreSQL runs as its own user under it
        return _run_on(Path(tmp), home, prepared, world, args, items, users, rate, fault_s)


def _run_on(tmp: Path, home: Path, prepared: str, world, args, items: int, users: int, rate: float,
            fault_s: float) -> int:
    with running_postgres(tmp / "pg") as url:
        store = open_store(url)
        open_store(prepared).copy_to(store)
        served = newest_model(home / "models" / MODEL_NAME, space=store.active_space())
        assert served is not None, "the prepared catalog has no model for its served space"
        # registered from a copy that is then removed, as a training job on another host would (`feedserve train
        # --register`): the rankers can only read it from the store
        copy = tmp / "trainer" / "models" / MODEL_NAME / served.version  # the training job's own home
        shutil.copytree(served.directory, copy, ignore=shutil.ignore_patterns("derived", "trt"))
        store.register_version(copy, "bench: the served version")
        keys = KeyStore(url)
        admin_token = keys.create("bench", role="admin", label="bench/chaos --replicas")[1]
        client_token = keys.create("clients", role="write", label="bench/chaos --replicas")[1]
        keys.close()
        replicas = Replicas(tmp / "hosts", url)
        ports = free_ports(7)
        try:
            generator = tmp / "hosts" / "generator"
            ensure_tiers(generator, sys.stderr)  # its own home's tiers
            replicas.spawn("generator", "generator", ports[6], "--home", str(generator), "--real-tier", "none",
                           "--routing", "--paramserver", shard_map(ports), "--semantic-threshold", "0", "--no-idle-class")
            start_services(replicas, ports[:6], "simulator", "--generator", f"127.0.0.1:{ports[6]}",
                           "--tenant-quota", "0:0:0")
            for name in replicas.all:
                replicas.wait(name)
            print(f"replicas: 2 gateways, 2 rankers, 2 paramserver shards, 1 generator on PostgreSQL, each its own "
                  f"home; {items:,} items, {users:,} users; {rate:g} feeds/s; faults of {fault_s:.0f} s; {machine()}",
                  flush=True)
            return _measure(args, replicas, store, url, world, users, rate, fault_s, admin_token, client_token, home)
        finally:
            replicas.stop()
            store.close()


def _measure(args, replicas: Replicas, store, url: str, world, users: int, rate: float, fault_s: float,
             admin_token: str, client_token: str, home: Path) -> int:
    gateways = [replicas.all["gateway-0"].address, replicas.all["gateway-1"].address]
    metadata = (("authorization", f"Bearer {admin_token}"),)
    stubs = [gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(a)) for a in gateways]
    admin = gateway_pb2_grpc.GatewayAdminStub(grpc.insecure_channel(gateways[0]))
    externals = [str(u) for u in world.user_ids.tolist()]
    numeric = store.resolve(USER, externals)

    # a cursor from A continued on B: the same page 2 as A gives
    same = 0
    for user in numeric[:20].tolist():
        first = stubs[0].Feed(gateway_pb2.FeedRequest(user_id=user, k=10), timeout=10, metadata=metadata)
        pages = [stubs[i].Feed(gateway_pb2.FeedRequest(user_id=user, k=10, cursor=first.next_cursor), timeout=10,
                               metadata=metadata) for i in (1, 0)]
        ids = [[item.item_id for item in page.items] for page in pages]
        same += int(ids[0] == ids[1] and len(ids[0]) > 0 and not {i.item_id for i in first.items} & set(ids[0]))
    cursor_ok = same / 20
    print(f"cursor: page 2 on the other gateway continued {same} of 20 rankings exactly", flush=True)

    # a revocation through A, refused by B
    created = admin.CreateKey(gateway_pb2.CreateKeyRequest(tenant="leaver", role="read"), timeout=10, metadata=metadata)
    leaver = (("authorization", f"Bearer {created.token}"),)
    stubs[1].Feed(gateway_pb2.FeedRequest(user_id=int(numeric[0]), k=5), timeout=10, metadata=leaver)  # B caches it

    def refused() -> bool:
        try:
            stubs[1].Feed(gateway_pb2.FeedRequest(user_id=int(numeric[0]), k=5), timeout=10, metadata=leaver)
            return False
        except grpc.RpcError as error:
            return error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

    start = time.monotonic()
    admin.RevokeKey(gateway_pb2.RevokeKeyRequest(key_id=created.key.key_id), timeout=10, metadata=metadata)
    revoke_s = (time.monotonic() - start) + until(refused, 30)
    print(f"revoke: through gateway A, refused by gateway B after {revoke_s:.2f} s", flush=True)

    # a promote through A, answered by both rankers
    trainer = replicas.root.parent / "trainer"  # the training job's own home, apart from the replicas'
    started = time.monotonic()
    v2 = train_on_served_space(store, preset_schema("simulator"), trainer / "models" / MODEL_NAME, DIM, epochs=2,
                               seed=5, stream=sys.stderr)
    store.register_version(v2.directory, "bench: trained over the served space")
    v3 = export_shuffled(v2, trainer / "models" / MODEL_NAME, seed=7)  # the bad canary, for later
    store.register_version(v3.directory, "bench: shuffled weights")
    shutil.rmtree(trainer)  # the rankers read both from the store
    print(f"trained and registered {MODEL_NAME}/{v2.version} (and the shuffled {v3.version}) in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    # as an operator does: shadowed first (both rankers fetch it from the store and load it), then promoted
    start = time.monotonic()
    admin.ShadowModel(gateway_pb2.ModelVersionRequest(family=MODEL_NAME, version=v2.version, sample=0.0), timeout=30,
                      metadata=metadata)
    loaded_s = until(lambda: all(v2.version in held for held in ranker_versions(replicas, resident=True)), 300, 0.2)
    print(f"shadow: both rankers fetched {v2.version} from the store and loaded it in {loaded_s:.1f} s", flush=True)
    start = time.monotonic()
    admin.PromoteModel(gateway_pb2.ModelVersionRequest(family=MODEL_NAME, version=v2.version), timeout=30,
                       metadata=metadata)
    promote_s = (time.monotonic() - start) + until(lambda: ranker_versions(replicas) == [{v2.version}] * 2, 300)
    print(f"promote: through gateway A, both rankers answer {v2.version} after {promote_s:.2f} s", flush=True)

    # faults under load, then the bad canary
    out, stop = Outcomes(), threading.Event()
    first_sequence = store.sequence()

    async def load() -> None:
        async with Client(gateways, client_token) as client:
            await drive(client, rate, numeric, externals, Simulated(world), stop, out)

    driver = threading.Thread(target=lambda: asyncio.run(load()))
    windows: list[tuple[str, float, float]] = []
    rollbacks, rollback_s = 0, float("nan")
    try:
        driver.start()
        time.sleep(3.0)  # steady load before the first fault (a benchmark's pacing)
        for kind in FAULTS:
            name = kind if kind == "generator" else f"{kind}-0"
            start = time.monotonic()
            replicas.kill_and_restart(name)
            serving = time.monotonic() - start
            time.sleep(max(0.0, start + fault_s - time.monotonic()))  # the rest of the window under load
            windows.append((name, start, start + fault_s))
            print(f"  {name:<14} killed; serving again after {serving:5.1f} s (window {fault_s:.0f} s)", flush=True)
        store.change_registry(lambda r: setattr(r.family(MODEL_NAME).guardrails, "min_feeds", args.min_feeds))
        start = time.monotonic()
        admin.CanaryModel(gateway_pb2.CanaryRequest(family=MODEL_NAME, version=v3.version, share=0.5), timeout=30,
                          metadata=metadata)
        try:
            rollback_s = until(lambda: store.registry().family(MODEL_NAME).versions[v3.version].state == "retired",
                               300, poll_s=0.5)
        except TimeoutError:
            print("  the bad canary was not rolled back in 300 s", flush=True)
        history = store.registry().family(MODEL_NAME).versions[v3.version].history
        rollbacks = sum(1 for change in history if "breached" in change["why"])
        why = history[-1]["why"] if history else ""
        print(f"bad canary {v3.version}: {rollbacks} rollback(s) after {rollback_s:.1f} s: {why}", flush=True)
    finally:
        stop.set()
        driver.join(60)

    logged = set(store.events(after=first_sequence)["seq"].tolist())
    acked_lost = sum(1 for seq in out.acked if seq not in logged)
    rows, answered_total, sent_total = fault_windows(windows, [(due, done, o) for due, done, o, _ in out.feeds])
    recoveries = [row[4] for row in rows]
    print(f"interactions acknowledged {len(out.acked)}, not acknowledged {out.interact_errors}, acknowledged but "
          f"missing from the log {acked_lost}")
    result = {"acked_lost": acked_lost, "answered_share_during_faults": answered_total / max(sent_total, 1),
              "recovery_s_max": max(recoveries) if recoveries else 0.0, "promote_visible_s": promote_s,
              "revoke_visible_s": revoke_s, "cursor_cross_replica_ok": cursor_ok, "rollbacks": rollbacks,
              "rollback_s": rollback_s}
    record("chaos-replicas", {**result, "fault_s": fault_s, "rate": rate, "acked": len(out.acked)})
    print(result_line({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))
    met = (acked_lost == 0 and result["answered_share_during_faults"] >= 0.99 and result["recovery_s_max"] <= 5
           and promote_s <= 1 and revoke_s <= 1 and cursor_ok == 1 and rollbacks == 1)
    print("targets (acked_lost = 0, answered_share_during_faults >= 0.99, recovery_s_max <= 5, promote_visible_s <= 1, "
          "revoke_visible_s <= 1, cursor_cross_replica_ok = 1, rollbacks = 1): " + ("met" if met else "MISSED"))
    return 0
