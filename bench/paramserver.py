"""The embedding store against Redis: bytes per embedding, batch lookups, drift rate, int8 error, side by side.

Starts Debian's redis-server itself (installing it with apt-get if missing) and loads the same
embeddings (64 float32, 256 bytes each) into Redis and into feedserve's cuckoo table at fp32, fp16
and int8. The like-for-like pair: a real paramserver process over its ring and over gRPC against Redis
over TCP, the same 2,400 ids answered as float32 rows, the three in rotating order batch after batch.
The in-process table lookups are listed beside them, as what the service adds to its table.

    python bench/paramserver.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import ensure_debian_tool, machine, percentiles_us, record, result_line  # noqa: E402
from cli.stack import free_ports, handshake_segment, wait_serving  # noqa: E402
from feedserve.v1 import paramserver_pb2, paramserver_pb2_grpc  # noqa: E402
from mesh.config import default_home  # noqa: E402
from mesh.methods import methods_of  # noqa: E402
from mesh.ring import RingChannel  # noqa: E402
from mesh.tensors import from_tensor, to_tensor  # noqa: E402
from native import CuckooTable  # noqa: E402

DIM, BATCH = 64, 2_400


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ensure_redis() -> str:
    return ensure_debian_tool("redis-server", "redis-server")


@contextmanager
def redis_loaded(ids: np.ndarray, values: np.ndarray) -> Iterator[tuple[Any, float]]:
    """A fresh redis-server holding `values` under `e:<id>` (pipelined MSETs); yields the client and the bytes
    per embedding it took. Stopped on exit."""
    import redis

    (port,) = free_ports(1)
    server = subprocess.Popen([ensure_redis(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(200):  # bounded: redis starts in milliseconds
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        before = client.info("memory")["used_memory"]
        names = [f"e:{k}".encode() for k in ids.tolist()]
        for start in range(0, len(ids), 10_000):
            pipe = client.pipeline(transaction=False)
            pipe.mset({names[i]: values[i].tobytes() for i in range(start, min(start + 10_000, len(ids)))})
            pipe.execute()
        yield client, (client.info("memory")["used_memory"] - before) / len(ids)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)


def redis_lookup(client: Any, batch: np.ndarray) -> int:
    """One MGET of the batch, decoded to float32 rows (what the service returns); nanoseconds."""
    wanted = [f"e:{k}".encode() for k in batch.tolist()]
    t = time.perf_counter_ns()
    rows = np.stack([np.frombuffer(cast(bytes, v), np.float32) for v in client.mget(wanted)])  # redis-py: bytes
    elapsed = time.perf_counter_ns() - t
    assert rows.shape == (len(batch), DIM)
    return elapsed


def bench_table(precision: str, keys: np.ndarray, values: np.ndarray, batches: list[np.ndarray]) -> dict:
    before = rss()
    table = CuckooTable(DIM, precision, expected=len(keys))
    for start in range(0, len(keys), 100_000):
        table.upsert(keys[start:start + 100_000], values[start:start + 100_000])
    rss_per = (rss() - before) / len(keys)
    out, found = np.empty((BATCH, DIM), np.float32), np.empty(BATCH, np.uint8)
    samples = []
    for batch in batches:
        t = time.perf_counter_ns()
        table.lookup_into(batch.view(np.uint64), out, found)
        samples.append(time.perf_counter_ns() - t)
    every, _ = table.lookup(keys)
    cosine = (every * values).sum(1) / (np.linalg.norm(every, axis=1) * np.linalg.norm(values, axis=1))
    drift_keys = keys[:100_000]
    targets = values[np.random.default_rng(1).integers(0, len(keys), len(drift_keys))]
    rates = np.full(len(drift_keys), 0.1, np.float32)
    started = time.perf_counter()
    table.drift(drift_keys, targets, rates)
    drift_per_s = len(drift_keys) / (time.perf_counter() - started)
    return {"rss_per": rss_per, "accounted_per": table.bytes / len(keys), "lookup": samples,
            "cosine_err": float((1 - cosine).mean()), "drift_per_s": drift_per_s}


def bench_service(home: Path, values: np.ndarray, batches: list[np.ndarray], redis_client: Any) -> dict[str, list[int]]:
    """A real paramserver holding `values` as items 1..n (upserted through its API): Lookup of 2,400 items over its
    ring and over gRPC, and the same batch from Redis, which holds the same ids; the three in rotating order,
    batch after batch, so that none gets the quiet moments."""
    (port,) = free_ports(1)
    state = home / "state" / f"bench-{os.getpid()}"
    server = subprocess.Popen([sys.executable, "-m", "paramserver", "--dim", str(DIM), "--port", str(port),
                               "--state-dir", str(state), "--snapshot-interval-s", "0", "--fsync", "never"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = f"127.0.0.1:{port}"
        wait_serving(address, 300, server)
        loader = paramserver_pb2_grpc.ParamServerStub(grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 << 20)]))
        for start in range(0, len(values), 50_000):
            part = values[start:start + 50_000]
            keys = np.arange(start + 1, start + 1 + len(part), dtype=np.int64)
            loader.Upsert(paramserver_pb2.UpsertRequest(table=paramserver_pb2.TABLE_ITEM, keys=to_tensor(keys),
                                                        values=to_tensor(part)), timeout=60)
        ring = RingChannel("paramserver", handshake_segment(address))
        lookup = methods_of(paramserver_pb2.DESCRIPTOR.services_by_name["ParamServer"])["Lookup"]
        stub = paramserver_pb2_grpc.ParamServerStub(grpc.insecure_channel(address))
        samples: dict[str, list[int]] = {"ring": [], "grpc": [], "redis": []}

        def over_ring(batch: np.ndarray) -> int:
            request = paramserver_pb2.LookupRequest(table=paramserver_pb2.TABLE_ITEM)
            t = time.perf_counter_ns()
            with ring.call(lookup, request, {"keys": batch}, 5) as reply:
                assert reply.tensors["found"].all()
                rows = reply.tensors["values"].copy()  # out of the slot, as a caller keeping them would
            elapsed = time.perf_counter_ns() - t
            assert rows.shape == (len(batch), DIM)
            return elapsed

        def over_grpc(batch: np.ndarray) -> int:
            t = time.perf_counter_ns()
            reply = stub.Lookup(paramserver_pb2.LookupRequest(table=paramserver_pb2.TABLE_ITEM, keys=to_tensor(batch)),
                                timeout=5)
            rows = from_tensor(reply.values, "values")
            elapsed = time.perf_counter_ns() - t
            assert from_tensor(reply.found, "found").all() and rows.shape == (len(batch), DIM)
            return elapsed

        paths = [("ring", over_ring), ("grpc", over_grpc), ("redis", lambda b: redis_lookup(redis_client, b))]
        for n, batch in enumerate(batches):
            for name, call in paths[n % 3:] + paths[:n % 3]:
                samples[name].append(call(batch))
        ring.close()
        return samples
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200,000 embeddings and fewer batches")
    parser.add_argument("--embeddings", type=int, help="default 1,000,000 (quick 200,000)")
    parser.add_argument("--home", type=Path, default=default_home(), help="where the paramserver's state goes (default: %(default)s)")
    args = parser.parse_args()
    try:
        import redis  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs the bench extra: pip install -e '.[bench]'") from None
    n = args.embeddings or (200_000 if args.quick else 1_000_000)
    rounds = 100 if args.quick else 300
    rng = np.random.default_rng(0)
    keys = rng.choice(2**62, n, replace=False).astype(np.int64) + 1
    values = rng.standard_normal((n, DIM)).astype(np.float32)
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    batches = [keys[rng.integers(0, n, BATCH)] for _ in range(rounds)]  # fresh random keys every batch
    print(f"paramserver: {n:,} embeddings of {DIM} float32, batches of {BATCH} random keys; {machine()}", flush=True)

    tables = {p: bench_table(p, keys, values, batches) for p in ("fp32", "fp16", "int8")}
    item_batches = [rng.integers(1, n + 1, BATCH).astype(np.int64) for _ in range(rounds)]
    with redis_loaded(np.arange(1, n + 1, dtype=np.int64), values) as (client, redis_per):
        service = bench_service(args.home, values, item_batches, client)
    redis_lookup_ns = service["redis"]

    print(f"\n{'store':<14} {'bytes/emb':>10} {'(accounted)':>12}")
    print(f"{'redis':<14} {redis_per:10.1f}")
    for precision, t in tables.items():
        print(f"{'table ' + precision:<14} {t['rss_per']:10.1f} {t['accounted_per']:12.1f}")
    print(f"\n{'lookup of 2400':<26} {'P50 us':>9} {'P99 us':>9}")
    rows = [("redis MGET + decode", redis_lookup_ns)] + [(f"table {p}, in process", t["lookup"]) for p, t in tables.items()]
    rows += [("service over ring (fp32)", service["ring"]), ("service over gRPC (fp32)", service["grpc"])]
    for label, samples in rows:
        p50, p99 = percentiles_us(samples)
        print(f"{label:<26} {p50:9.1f} {p99:9.1f}")
    fp32_p50 = percentiles_us(tables["fp32"]["lookup"])[0]
    redis_p50 = percentiles_us(redis_lookup_ns)[0]
    # like for like: a separate process answering 2,400 keys as float32 rows, over its ring and over gRPC,
    # against Redis over TCP with the same batch (MGET + decode to float32)
    ring_p50, grpc_p50 = percentiles_us(service["ring"])[0], percentiles_us(service["grpc"])[0]
    print(f"\nratios: redis/int8 memory {redis_per / tables['int8']['rss_per']:.2f}x, fp32/redis memory "
          f"{tables['fp32']['rss_per'] / redis_per:.2f}, redis/table lookup P50 {redis_p50 / fp32_p50:.1f}x (in process); "
          f"redis/service P50 {redis_p50 / ring_p50:.2f}x over the ring, {redis_p50 / grpc_p50:.2f}x over gRPC (both a process away)")
    print(f"drift: {tables['fp32']['drift_per_s']:,.0f}/s (fp32, batches of 100,000); "
          f"int8 cosine error {tables['int8']['cosine_err']:.5f}, fp16 {tables['fp16']['cosine_err']:.6f}")
    result = {
        "redis_bytes_per_emb": redis_per, "fp32_bytes_per_emb": tables["fp32"]["rss_per"],
        "int8_bytes_per_emb": tables["int8"]["rss_per"], "memory_ratio_int8": redis_per / tables["int8"]["rss_per"],
        "lookup2400_p50_us": fp32_p50, "redis_mget2400_p50_us": redis_p50,
        "service_ring2400_p50_us": ring_p50, "service_grpc2400_p50_us": grpc_p50,
        "redis_over_service_ring": redis_p50 / ring_p50, "redis_over_service_grpc": redis_p50 / grpc_p50,
        "drift_per_s": tables["fp32"]["drift_per_s"], "int8_cosine_err": tables["int8"]["cosine_err"],
    }
    record("paramserver", {**result, "embeddings": n, "fp16_bytes_per_emb": tables["fp16"]["rss_per"]})
    print(result_line(result).replace("int8_cosine_err=" + f"{result['int8_cosine_err']:.2f}",
                                      f"int8_cosine_err={result['int8_cosine_err']:.5f}"))


if __name__ == "__main__":
    main()
