"""Ingestion against the real stack (paramserver, ranker, gateway as child processes on one SQLite store):

- items_per_s      new items (distinct texts) upserted through the Catalog API until every one is encoded and served
- events_per_s     InteractBatch calls of 10,000 events, each acknowledged only once durable
- visible_p99_ms   from an upsert's acknowledgement to the first Feed (no min_sequence) that returns the item
- delete_visible_p99_ms  the same for a delete: until no Feed returns it
- feed_p50_ratio   Feed P50 while ingestion runs (a steady --ingest-items-per-s new items and --ingest-events-per-s
                   events) / Feed P50 without; blocks alternate, in one run

A degraded feed is counted apart and never enters the latency figures.

    python bench/ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine, p50_p99, prepare_catalog, record, result_line  # noqa: E402
from catalog import open_store  # noqa: E402
from cli.stack import Stack, free_ports  # noqa: E402
from feedserve.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402
from mesh.config import StackConfig, default_home  # noqa: E402

_WORDS = ("river", "orbit", "saffron", "glacier", "violin", "harbor", "quartz", "meadow", "lantern", "canyon", "cobalt",
          "ember", "falcon", "granite", "hazel", "island", "jasmine", "kelp", "lagoon", "marble")


def _text(rng: np.random.Generator) -> str:
    """A distinct title: every item costs one real encoding."""
    return " ".join(rng.choice(_WORDS, 4)) + f" {uuid.uuid4().hex[:8]}"


class Bench:
    def __init__(self, address: str, store: str, users: int) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
        self.catalog = catalog_pb2_grpc.CatalogStub(self.channel)
        self.gateway = gateway_pb2_grpc.GatewayStub(self.channel)
        self.store = open_store(store)
        self.users = users
        self.rng = np.random.default_rng(0)
        self.degraded = 0

    def upsert(self, n: int, tag: str = "") -> tuple[catalog_pb2.WriteAck, list[str]]:
        items = [catalog_pb2.CatalogItem(id=f"bench-{uuid.uuid4().hex}", title=_text(self.rng), text="bench item",
                                         categories=["bench"], tags=[tag] if tag else [], published=int(time.time()))
                 for _ in range(n)]
        return self.catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=items), timeout=120), [i.id for i in items]

    def feed(self, **fields) -> gateway_pb2.FeedResponse:
        user = int(self.rng.integers(1, self.users + 1))
        return self.gateway.Feed(gateway_pb2.FeedRequest(user_id=user, k=20, **fields), timeout=5)

    def timed_feed(self) -> float | None:
        start = time.perf_counter()
        reply = self.feed()
        elapsed = time.perf_counter() - start
        if reply.degraded:
            self.degraded += 1
            return None
        return elapsed

    def items_per_s(self, n: int) -> float:
        """Upsert n distinct items in batches of 1,000, then wait until none waits for its content vector."""
        start = time.perf_counter()
        for done in range(0, n, 1_000):
            self.upsert(min(1_000, n - done))
        while self.store.pending_count():
            time.sleep(0.05)  # benchmark polling the store (an indexed count), not a test
        return n / (time.perf_counter() - start)

    def send_events(self, n: int, items: list[str]) -> None:
        events = [catalog_pb2.CatalogEvent(user=str(int(u)), item=items[int(i)], event=common_pb2.EVENT_TYPE_CLICK)
                  for u, i in zip(self.rng.integers(1, self.users + 1, n), self.rng.integers(0, len(items), n))]
        self.catalog.InteractBatch(catalog_pb2.InteractBatchRequest(events=events), timeout=120)

    def events_per_s(self, batches: int, items: list[str]) -> float:
        start = time.perf_counter()
        for _ in range(batches):
            self.send_events(10_000, items)
        return batches * 10_000 / (time.perf_counter() - start)

    def visibility(self, rounds: int) -> tuple[list[float], list[float]]:
        """Per round: one new item with a unique tag; Feed filtered on that tag until it shows, then until, after
        its delete, it no longer does (the filter only narrows the answer to the one item being watched)."""
        shown, gone = [], []
        for _ in range(rounds):
            tag = uuid.uuid4().hex[:12]
            ack, (external,) = self.upsert(1, tag)
            start = time.perf_counter()
            while not any(i.id == external for i in self.feed(include_labels=[tag]).items):
                time.sleep(0.005)  # benchmark polling the public API, not a test
            shown.append(time.perf_counter() - start)
            self.catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(ids=[external]), timeout=10)
            start = time.perf_counter()
            while any(i.id == external for i in self.feed(include_labels=[tag]).items):
                time.sleep(0.005)
            gone.append(time.perf_counter() - start)
        return shown, gone


def steady_ingest(address: str, store: str, users: int, ids: list[str], items_per_s: float, events_per_s: float,
                  stop) -> None:
    """A steady live catalog, until `stop` is set: a batch of new items and one of events every 200 ms."""
    writer = Bench(address, store, users)
    tick = 0.2
    while not stop.wait(tick):
        writer.upsert(max(int(items_per_s * tick), 1))
        writer.send_events(max(int(events_per_s * tick), 1), ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller catalog and fewer rounds (under a minute once prepared)")
    parser.add_argument("--home", type=Path, help="where the bench catalog is prepared (default: HOME/bench-ingest-N)")
    parser.add_argument("--ingest-items-per-s", type=float, default=100.0,
                        help="new items per second during the feed comparison (default: %(default)s)")
    parser.add_argument("--ingest-events-per-s", type=float, default=5_000.0,
                        help="events per second during the feed comparison (default: %(default)s)")
    args = parser.parse_args()
    items, users, interactions = (20_000, 2_000, 100_000) if args.quick else (100_000, 20_000, 400_000)
    new_items, batches, rounds, blocks = (2_000, 5, 20, 4) if args.quick else (10_000, 20, 100, 8)
    home = args.home or default_home() / f"bench-ingest-{items}"
    store = prepare_catalog(home, items, users, interactions)
    ports = free_ports(4)
    config = StackConfig(gateway_port=ports[0], paramserver_port=ports[1], ranker_port=ports[2], generator_port=ports[3])
    stack = Stack(home, store, "simulator", config, home / "logs" / "ingest")
    print(f"ingest: {items:,} items, {users:,} users, SQLite store, real stack; {machine()}", flush=True)
    stack.start()
    spawn = multiprocessing.get_context("spawn")
    try:
        bench = Bench(config.gateway_address, store, users)
        for _ in range(20):
            bench.timed_feed()  # warm caches and sessions
        items_per_s = bench.items_per_s(new_items)
        print(f"items: {new_items:,} distinct items upserted and encoded: {items_per_s:,.0f} items/s", flush=True)
        ids = [i.external_id for i in bench.store.changes(0, limit=5_000)[0]]
        events_per_s = bench.events_per_s(batches, ids)
        print(f"events: {batches} x 10,000 durable: {events_per_s:,.0f} events/s", flush=True)
        shown, gone = bench.visibility(rounds)
        shown_p50, shown_p99 = p50_p99([s * 1e3 for s in shown])
        gone_p50, gone_p99 = p50_p99([s * 1e3 for s in gone])
        print(f"visible after upsert: P50 {shown_p50:.0f} ms, P99 {shown_p99:.0f} ms; "
              f"gone after delete: P50 {gone_p50:.0f} ms, P99 {gone_p99:.0f} ms", flush=True)

        quiet: list[float] = []
        busy: list[float] = []  # alternating blocks: without, then with ingestion in the background
        for block in range(blocks):
            stop = spawn.Event()
            writer = None
            if block % 2:  # another process: the writer must not take this process's GIL from the feed client
                writer = spawn.Process(target=steady_ingest, args=(config.gateway_address, store, users, ids,
                                                                   args.ingest_items_per_s, args.ingest_events_per_s,
                                                                   stop), daemon=True)
                writer.start()
            samples = [bench.timed_feed() for _ in range(60 if args.quick else 200)]
            (busy if block % 2 else quiet).extend(s for s in samples if s is not None)
            stop.set()
            if writer is not None:
                writer.join()
        quiet_p50, quiet_p99 = p50_p99([s * 1e3 for s in quiet])
        busy_p50, busy_p99 = p50_p99([s * 1e3 for s in busy])
        ratio = busy_p50 / quiet_p50
        print(f"feed without ingestion: P50 {quiet_p50:.1f} ms, P99 {quiet_p99:.1f} ms; with {args.ingest_items_per_s:.0f} "
              f"items/s and {args.ingest_events_per_s:,.0f} events/s: P50 {busy_p50:.1f} ms, "
              f"P99 {busy_p99:.1f} ms; ratio {ratio:.2f}; degraded feeds (not counted) {bench.degraded}")
    finally:
        stack.stop()
    result = {"items_per_s": items_per_s, "events_per_s": events_per_s, "visible_p99_ms": shown_p99,
              "delete_visible_p99_ms": gone_p99, "feed_p50_ratio": ratio}
    record("ingest", {**result, "items": items, "new_items": new_items, "visible_p50_ms": shown_p50,
                      "delete_visible_p50_ms": gone_p50, "feed_p50_quiet_ms": quiet_p50, "feed_p50_busy_ms": busy_p50,
                      "feed_p99_quiet_ms": quiet_p99, "feed_p99_busy_ms": busy_p99, "degraded": bench.degraded,
                      "cpus": os.cpu_count()})
    print(result_line(result))


if __name__ == "__main__":
    main()
