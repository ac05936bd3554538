"""Two of each service on one PostgreSQL store, as separate processes with their own homes (bench/replicas.py
starts them as `bench/chaos.py --replicas` does): they share no file, and follow one registry, one set of keys and
one cursor key through the store."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import grpc

from bench.replicas import Replicas, ranker_versions, start_services
from catalog import open_store
from cli.stack import free_ports
from feedserve.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.keys import KeyStore
from tests.ranker.test_rollout import copy_version

ROOT = Path(__file__).resolve().parents[2]


def _until(check, timeout: float) -> None:
    """Poll another process's state (there is nothing to wait on across processes) until `check()` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)  # the polling period


def _files_held(pid: int) -> set[str]:
    """Every regular file the process has open or mapped, but code: the interpreter's and the project's."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            continue
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            found.add(parts[5])
    code = (sys.prefix, sys.base_prefix, str(ROOT), "/usr/", "/lib", "/etc/", "/dev/", "/proc/", "/sys/")
    return {path for path in found if os.path.isfile(path) and not path.startswith(code)}


def test_two_of_each_share_no_file_and_follow_one_store(catalog, manifest, postgres_database, tmp_path) -> None:
    """Two paramserver shards, two rankers and two gateways on one PostgreSQL store, each in its own home. The
    served version is registered from a copy that is then removed, so the rankers can only fetch it from the store;
    a cursor from gateway A continues on gateway B; a version shadowed and promoted through A is answered by both
    rankers; and every file a replica holds open or mapped lies in its own home."""
    store = open_store(postgres_database)
    open_store(catalog.url).copy_to(store)
    copy = copy_version(manifest, tmp_path / "trainer", manifest.version)
    store.register_version(copy.directory, "test: the served version")
    second = copy_version(manifest, tmp_path / "trainer", "2")
    store.register_version(second.directory, "test: the next version")
    shutil.rmtree(tmp_path / "trainer")
    keys = KeyStore(postgres_database)
    token = keys.create("operator", role="admin")[1]
    keys.close()
    replicas = Replicas(tmp_path / "hosts", postgres_database)
    try:
        start_services(replicas, free_ports(6), catalog.schema.name)
        for name in replicas.all:
            replicas.wait(name)
        metadata = (("authorization", f"Bearer {token}"),)
        gateways = [gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(replicas.all[f"gateway-{i}"].address))
                    for i in range(2)]
        user = int(catalog.user_ids[0])
        first = gateways[0].Feed(gateway_pb2.FeedRequest(user_id=user, k=5), timeout=30, metadata=metadata)
        pages = [gateways[i].Feed(gateway_pb2.FeedRequest(user_id=user, k=5, cursor=first.next_cursor), timeout=30,
                                  metadata=metadata) for i in (1, 0)]
        assert [i.item_id for i in pages[0].items] == [i.item_id for i in pages[1].items] and pages[0].items
        assert not {i.item_id for i in first.items} & {i.item_id for i in pages[0].items}

        admin = gateway_pb2_grpc.GatewayAdminStub(grpc.insecure_channel(replicas.all["gateway-0"].address))
        admin.ShadowModel(gateway_pb2.ModelVersionRequest(family=manifest.name, version="2", sample=0.0), timeout=30,
                          metadata=metadata)
        _until(lambda: all("2" in held for held in ranker_versions(replicas, resident=True)), 300)
        admin.PromoteModel(gateway_pb2.ModelVersionRequest(family=manifest.name, version="2"), timeout=30,
                           metadata=metadata)
        _until(lambda: ranker_versions(replicas) == [{"2"}, {"2"}], 60)

        for name, replica in replicas.all.items():
            assert replica.process is not None
            held = _files_held(replica.process.pid)
            assert all(Path(path).is_relative_to(replica.home) for path in held), (name, held)
        for i in range(2):  # each fetched both versions from the store into its own home
            assert len(list((replicas.all[f"ranker-{i}"].home / "cache" / "models").iterdir())) == 2
    finally:
        replicas.stop()
        store.close()
