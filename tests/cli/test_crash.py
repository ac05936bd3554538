"""kill -9 during ingestion: no acknowledged write is lost, and every service's derived state converges after restart."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from catalog import ITEM, open_store
from catalog.encoding import ContentEncoder
from cli.stack import Stack, free_ports
from feedserve.v1 import catalog_pb2, catalog_pb2_grpc, paramserver_pb2, paramserver_pb2_grpc, ranker_pb2, ranker_pb2_grpc
from mesh.config import StackConfig
from mesh.tensors import from_tensor, to_tensor

pytestmark = pytest.mark.slow


class _Writer(threading.Thread):
    """Upserts batches of new items through the gateway until stopped; keeps the ids whose batch was acknowledged."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address, self.acked, self.failed = address, [], 0
        self.stop = threading.Event()
        self.progress = threading.Condition()

    def run(self) -> None:
        n = 0
        with grpc.insecure_channel(self.address) as channel:
            stub = catalog_pb2_grpc.CatalogStub(channel)
            while not self.stop.is_set():
                ids = [f"crash-{n}-{k}" for k in range(20)]
                n += 1
                request = catalog_pb2.UpsertItemsRequest(items=[
                    catalog_pb2.CatalogItem(id=i, title=f"Crash test {i}", categories=["crash"]) for i in ids])
                try:
                    stub.UpsertItems(request, timeout=5, wait_for_ready=True)
                except grpc.RpcError:
                    self.failed += 1  # not acknowledged: may or may not be there
                    continue
                with self.progress:
                    self.acked += ids
                    self.progress.notify_all()

    def wait_for(self, count: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: len(self.acked) >= count, timeout=120)


def test_kill_9_of_each_service_during_ingestion_loses_nothing_and_converges(catalog, manifest, encoder_home: Path,
                                                                            content_encoder, tmp_path: Path) -> None:
    """The gateway, the ranker and the paramserver are each SIGKILLed while items stream in, then restarted.
    Every acknowledged item is in the store; once every item has its content vector, the ranker ranks every
    one of them and the paramserver holds every one's vector."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    shutil.copytree(manifest.directory, home / "models" / "ranker-mlp" / "1")
    (home / "encoder").symlink_to(encoder_home / "encoder")
    store = catalog.copy(home)
    ports = free_ports(4)
    config = StackConfig(gateway_port=ports[0], paramserver_port=ports[1], ranker_port=ports[2], generator_port=ports[3])
    stack = Stack(home, store, "simulator", config, home / "logs")
    stack.start()
    writer = _Writer(config.gateway_address)
    try:
        writer.start()
        for victim, after in (("gateway", 200), ("ranker", 400), ("paramserver", 600)):
            writer.wait_for(after)
            service = next(s for s in stack.services if s.name == victim)
            service.process.send_signal(signal.SIGKILL)
            stack.restart(victim)
        writer.wait_for(800)
    finally:
        writer.stop.set()
        writer.join()
    try:
        catalog_store = open_store(store)
        ids = catalog_store.resolve(ITEM, writer.acked)
        assert (ids > 0).all(), "an acknowledged item is missing from the store"
        ContentEncoder(catalog_store, content_encoder.encode_batch).drain()  # beside the gateway's own encoder
        sequence = catalog_store.sequence()
        with grpc.insecure_channel(config.ranker_address) as channel:  # the ranker waits for the sequence itself
            ranker = ranker_pb2_grpc.RankerStub(channel)
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                reply = ranker.Rank(ranker_pb2.RankRequest(k=len(part), candidates=to_tensor(part), min_sequence=sequence,
                                                           min_sequence_wait_ms=30_000, include_seen=True), timeout=60)
                assert not reply.behind and len(reply.items) == len(part)
        stack.restart("paramserver")  # a paramserver applies the whole feed before it reports SERVING
        with grpc.insecure_channel(config.paramserver_address) as channel:
            paramserver = paramserver_pb2_grpc.ParamServerStub(channel)
            for start in range(0, len(ids), 500):
                reply = paramserver.Lookup(paramserver_pb2.LookupRequest(
                    table=paramserver_pb2.TABLE_ITEM, keys=to_tensor(np.asarray(ids[start:start + 500]))), timeout=10)
                assert from_tensor(reply.found, "found").all()
    finally:
        stack.stop()

