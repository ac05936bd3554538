"""Two paramserver shards by hash slot: a batch fans out to both; with one down, its keys are flagged, the rest answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from errors import Unavailable
from feedserve.v1 import paramserver_pb2, paramserver_pb2_grpc
from mesh.clients import ParamServerClient
from mesh.grpc_server import start_server
from mesh.shards import SlotMap, SlotRange, slot_of
from paramserver.service import ParamServerServicer
from tests.stack import paramserver_core

DESCRIPTOR = paramserver_pb2.DESCRIPTOR.services_by_name["ParamServer"]


async def _shard(catalog, state: Path, slots: SlotRange):
    core = paramserver_core(catalog, state, slots=slots)
    servicer = ParamServerServicer(core)
    server = await start_server(
        {DESCRIPTOR.full_name: lambda s: paramserver_pb2_grpc.add_ParamServerServicer_to_server(servicer, s)}, "127.0.0.1:0")
    return server, core


def test_two_shards_then_one_down(catalog, tmp_path: Path, run) -> None:
    users = np.arange(1, 201, dtype=np.int64)
    on_b = slot_of(users) >= 8192

    async def body() -> None:
        a, core_a = await _shard(catalog, tmp_path / "a", SlotRange(0, 8191))
        b, core_b = await _shard(catalog, tmp_path / "b", SlotRange(8192, 16383))
        client = ParamServerClient(SlotMap.parse(f"0-8191=127.0.0.1:{a.port},8192-16383=127.0.0.1:{b.port}"), use_ring=False)
        try:
            both = await client.lookup(paramserver_pb2.TABLE_USER, users, timeout=5)
            assert both.found.all() and not both.unavailable.any()
            np.testing.assert_array_equal(both.values, catalog.user_vectors[:200])
            assert {t.calls["grpc"] for t in client.transports} == {1}  # one call per shard, in parallel

            await b.stop(0)
            half = await client.lookup(paramserver_pb2.TABLE_USER, users, timeout=5)
            assert (half.unavailable == on_b).all()
            assert half.found[~on_b].all() and not half.found[on_b].any()
            items = await client.lookup(paramserver_pb2.TABLE_ITEM, np.array([1, 2, 3]), timeout=5)
            assert items.found.all()  # items live on every shard: the live one answers
            with pytest.raises(Unavailable, match="paramserver"):
                await client.user_vector(int(users[on_b][0]), timeout=5)
            assert (await client.user_vector(int(users[~on_b][0]), timeout=5)).vector is not None
        finally:
            await client.close()
            await a.stop(0)
            core_a.close()
            core_b.close()

    run(body())
