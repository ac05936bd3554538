"""ParamServer over a real gRPC server: lookups, upserts, drift, snapshots, and bad input that changes nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from feedserve.v1 import common_pb2, paramserver_pb2, paramserver_pb2_grpc
from mesh.tensors import from_tensor, to_tensor
from tests.stack import start_paramserver

USER, ITEM = paramserver_pb2.TABLE_USER, paramserver_pb2.TABLE_ITEM


async def _with_paramserver(catalog, tmp_path: Path, body) -> None:
    server, _ = await start_paramserver(catalog, tmp_path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await body(paramserver_pb2_grpc.ParamServerStub(channel))
    finally:
        await server.stop(0)


async def _lookup(stub, table: int, keys: list[int]) -> tuple[np.ndarray, np.ndarray]:
    reply = await stub.Lookup(paramserver_pb2.LookupRequest(table=table, keys=to_tensor(np.array(keys, np.int64))))
    return from_tensor(reply.values, "values"), from_tensor(reply.found, "found")


class TestLookup:
    def test_known_and_unknown_keys_are_reported_per_key(self, catalog, tmp_path, run) -> None:
        """A batch mixing known and unknown users returns rows for the known and found=0 for the rest."""

        async def body(stub) -> None:
            values, found = await _lookup(stub, USER, [1, 10**9, 3])
            assert found.tolist() == [1, 0, 1]
            np.testing.assert_allclose(values[0], catalog.vector(1))
            assert not values[1].any()

        run(_with_paramserver(catalog, tmp_path, body))


class TestUpsert:
    def test_upsert_then_lookup_returns_the_new_rows(self, catalog, tmp_path, run) -> None:
        async def body(stub) -> None:
            rows = np.random.default_rng(0).standard_normal((2, catalog.dim)).astype(np.float32)
            reply = await stub.Upsert(
                paramserver_pb2.UpsertRequest(table=ITEM, keys=to_tensor(np.array([7, 10**8], np.int64)), values=to_tensor(rows))
            )
            assert reply.upserted == 2
            values, found = await _lookup(stub, ITEM, [7, 10**8])
            assert found.all()
            np.testing.assert_array_equal(values, rows)

        run(_with_paramserver(catalog, tmp_path, body))

    @pytest.mark.parametrize(
        "keys, values, field",
        [
            (np.array([5], np.int64), np.zeros((1, 3), np.float32), "values.shape"),
            (np.array([5], np.int64), np.full((1, 64), np.nan, np.float32), "values"),
            (np.array([5], np.int64), np.full((1, 64), np.inf, np.float32), "values"),
            (np.array([5], np.int32), np.zeros((1, 64), np.float32), "keys.dtype"),
            (np.array([0], np.int64), np.zeros((1, 64), np.float32), "keys"),
        ],
    )
    def test_bad_upsert_is_rejected_and_changes_nothing(self, catalog, tmp_path, run, keys, values, field) -> None:
        """Wrong dimension, NaN/Inf, wrong key dtype or a zero key: INVALID_ARGUMENT naming the field; row 5 unchanged."""

        async def body(stub) -> None:
            before, _ = await _lookup(stub, ITEM, [5])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Upsert(paramserver_pb2.UpsertRequest(table=ITEM, keys=to_tensor(keys), values=to_tensor(values)))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details().startswith(field)
            after, _ = await _lookup(stub, ITEM, [5])
            np.testing.assert_array_equal(before, after)

        run(_with_paramserver(catalog, tmp_path, body))

    def test_unknown_table_is_invalid(self, catalog, tmp_path, run) -> None:
        async def body(stub) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Lookup(paramserver_pb2.LookupRequest(table=42, keys=to_tensor(np.array([1], np.int64))))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "table" in caught.value.details()

        run(_with_paramserver(catalog, tmp_path, body))


class TestDrift:
    def test_like_moves_the_user_ten_percent_toward_the_item(self, catalog, tmp_path, run) -> None:
        """Read-your-writes: the next Lookup returns normalise(u + 0.1 (i - u))."""

        async def body(stub) -> None:
            (user,), _ = await _lookup(stub, USER, [4])
            (item,), _ = await _lookup(stub, ITEM, [9])
            reply = await stub.Drift(paramserver_pb2.DriftRequest(user_id=4, item_id=9, event=common_pb2.EVENT_TYPE_LIKE))
            assert reply.applied and reply.rate == pytest.approx(0.1)
            expected = user + 0.1 * (item - user)
            expected /= np.linalg.norm(expected)
            (after,), _ = await _lookup(stub, USER, [4])
            np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(from_tensor(reply.user_vector, "v"), after)

        run(_with_paramserver(catalog, tmp_path, body))

    def test_unknown_user_is_created_from_a_positive_event(self, catalog, tmp_path, run) -> None:
        async def body(stub) -> None:
            reply = await stub.Drift(paramserver_pb2.DriftRequest(user_id=10**7, item_id=2, event=common_pb2.EVENT_TYPE_CLICK))
            assert reply.applied and reply.created
            values, found = await _lookup(stub, USER, [10**7])
            assert found[0] == 1
            np.testing.assert_allclose(values[0], catalog.item_vectors[1])

        run(_with_paramserver(catalog, tmp_path, body))

    @pytest.mark.parametrize(
        "user, item, event, code, field",
        [
            (0, 1, common_pb2.EVENT_TYPE_LIKE, grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
            (1, 0, common_pb2.EVENT_TYPE_LIKE, grpc.StatusCode.INVALID_ARGUMENT, "item_id"),
            (1, 1, 0, grpc.StatusCode.INVALID_ARGUMENT, "event"),
            (1, 1, 77, grpc.StatusCode.INVALID_ARGUMENT, "event"),
            (1, 10**9, common_pb2.EVENT_TYPE_LIKE, grpc.StatusCode.NOT_FOUND, "item_id"),
        ],
    )
    def test_bad_drift_is_rejected_and_changes_nothing(self, catalog, tmp_path, run, user, item, event, code, field) -> None:
        async def body(stub) -> None:
            before, _ = await _lookup(stub, USER, [1])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Drift(paramserver_pb2.DriftRequest(user_id=user, item_id=item, event=event))
            assert caught.value.code() == code
            assert field in caught.value.details()
            after, _ = await _lookup(stub, USER, [1])
            np.testing.assert_array_equal(before, after)

        run(_with_paramserver(catalog, tmp_path, body))


class TestSnapshot:
    def test_snapshot_writes_every_row(self, catalog, tmp_path, run) -> None:
        async def body(stub) -> None:
            reply = await stub.Snapshot(paramserver_pb2.SnapshotRequest())
            assert reply.rows == len(catalog.user_ids) + len(catalog.item_vectors)
            with np.load(reply.path) as saved:
                assert len(saved["user_keys"]) == len(catalog.user_ids)
                order = np.argsort(saved["item_keys"])
                np.testing.assert_array_equal(saved["item_keys"][order][:3], [1, 2, 3])
                np.testing.assert_array_equal(saved["item_values"][order][:3], catalog.item_vectors[:3])

        run(_with_paramserver(catalog, tmp_path, body))
