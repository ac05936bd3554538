"""Durability: every acknowledged update survives kill -9; state is the last snapshot plus the WAL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from cli.stack import free_ports, wait_serving
from feedserve.v1 import common_pb2, paramserver_pb2, paramserver_pb2_grpc
from mesh.methods import HeapOutputs
from mesh.tensors import from_tensor, to_tensor
from tests.stack import paramserver_core

ITEM = paramserver_pb2.TABLE_ITEM
NEW_KEYS = 10**9  # far past the catalog's ids


def _start(catalog, state: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "paramserver", "--store", catalog.url, "--port", str(port), "--state-dir", str(state),
         "--fsync", "always", "--snapshot-interval-s", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "FEEDSERVE_TRANSPORT": "grpc"})
    wait_serving(f"127.0.0.1:{port}", 60, process)
    return process


@pytest.mark.slow
def test_every_acknowledged_update_survives_kill_9_during_a_write_storm(catalog, tmp_path: Path) -> None:
    """32 writers upsert distinct keys; the server is SIGKILLed mid-storm; after restart every acked key is there."""
    (port,) = free_ports(1)
    process = _start(catalog, tmp_path, port)
    acked: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(0)

    async def storm() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = paramserver_pb2_grpc.ParamServerStub(channel)

            async def writer(w: int) -> None:
                for i in range(10_000):
                    key = NEW_KEYS + w * 100_000 + i
                    row = rng.standard_normal((1, catalog.dim)).astype(np.float32)
                    try:
                        await stub.Upsert(paramserver_pb2.UpsertRequest(
                            table=ITEM, keys=to_tensor(np.array([key], np.int64)), values=to_tensor(row)), timeout=5)
                    except grpc.aio.AioRpcError:
                        return  # the server died: this write was never acknowledged
                    acked[key] = row[0]
                    if len(acked) == 300:
                        process.send_signal(signal.SIGKILL)

            await asyncio.gather(*(writer(w) for w in range(32)))

    asyncio.run(storm())
    process.wait()
    assert len(acked) >= 300
    process = _start(catalog, tmp_path, port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            keys = np.array(sorted(acked), np.int64)
            reply = paramserver_pb2_grpc.ParamServerStub(channel).Lookup(
                paramserver_pb2.LookupRequest(table=ITEM, keys=to_tensor(keys)), timeout=10)
        found = from_tensor(reply.found, "found").astype(bool)
        assert found.all(), f"{(~found).sum()} acknowledged updates lost"
        np.testing.assert_array_equal(from_tensor(reply.values, "values"), np.stack([acked[k] for k in keys]))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_state_is_the_snapshot_plus_the_wal_replayed(catalog, tmp_path: Path) -> None:
    """Upsert, snapshot (WAL truncated), upsert and drift again; a new core on the same state sees all three."""
    core = paramserver_core(catalog, tmp_path)
    dim = catalog.dim
    first, second = np.full((1, dim), 0.5, np.float32), np.full((1, dim), -0.25, np.float32)
    core.upsert(paramserver_pb2.UpsertRequest(table=ITEM), {"keys": np.array([NEW_KEYS], np.int64), "values": first}, HeapOutputs())
    core.snapshot(None, {}, None)
    at_snapshot = core.wal.last_seq  # the catalog's items and the seeded users came in first, through the same log
    assert len(core.wal.segments()) == 1  # segments before the snapshot are gone
    core.upsert(paramserver_pb2.UpsertRequest(table=ITEM), {"keys": np.array([NEW_KEYS + 1], np.int64), "values": second}, HeapOutputs())
    out = HeapOutputs()
    core.drift(paramserver_pb2.DriftRequest(user_id=3, item_id=NEW_KEYS + 1, event=common_pb2.EVENT_TYPE_LIKE), {}, out)
    moved = out.arrays["user_vector"].copy()
    core.close()

    restored = paramserver_core(catalog, tmp_path)
    assert restored.replayed == 2 and restored.snapshot_seq == at_snapshot
    values, found = restored.tables[ITEM].lookup(np.array([NEW_KEYS, NEW_KEYS + 1], np.int64))
    assert found.all()
    np.testing.assert_array_equal(values, np.concatenate([first, second]))
    np.testing.assert_array_equal(restored.tables[paramserver_pb2.TABLE_USER].lookup(np.array([3], np.int64))[0][0], moved)
    restored.close()


def test_a_torn_wal_tail_is_cut_and_the_rest_replays(catalog, tmp_path: Path) -> None:
    """Half a record at the end of the log (a crash mid-write) is dropped; whole records before it replay."""
    core = paramserver_core(catalog, tmp_path)
    row = np.full((1, catalog.dim), 0.125, np.float32)
    core.upsert(paramserver_pb2.UpsertRequest(table=ITEM), {"keys": np.array([NEW_KEYS], np.int64), "values": row}, HeapOutputs())
    records = core.wal.last_seq
    core.close()
    segment = core.wal.segments()[-1]
    with open(segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")
    restored = paramserver_core(catalog, tmp_path)
    assert restored.replayed == records
    assert restored.tables[ITEM].lookup(np.array([NEW_KEYS], np.int64))[1][0]
    restored.close()


def test_a_removed_user_stays_removed_after_restart(catalog, tmp_path: Path) -> None:
    """Remove is logged before it is applied: a forgotten user is still forgotten when the WAL replays."""
    user = paramserver_pb2.TABLE_USER
    core = paramserver_core(catalog, tmp_path)
    removed = core.remove(paramserver_pb2.RemoveRequest(table=user), {"keys": np.array([5, 10**9], np.int64)}, HeapOutputs())
    assert removed.removed == 1
    core.close()
    restored = paramserver_core(catalog, tmp_path)
    found = restored.tables[user].lookup(np.array([5, 6], np.int64))[1]
    assert found.tolist() == [False, True]
    restored.close()
