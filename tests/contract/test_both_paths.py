"""Every unary RPC of every ring-serving service gives equal answers over the ring and over gRPC."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import numpy as np

from errors import FeedserveError
from feedserve.v1 import common_pb2, paramserver_pb2, paramserver_pb2_grpc, ranker_pb2, ranker_pb2_grpc
from mesh.methods import tensor_fields
from mesh.transport import Transport
from paramserver.service import ParamServerServicer
from ranker.service import RankerServicer
from tests.stack import paramserver_core, ranker_for, serve_with_ring

PARAMSERVER = paramserver_pb2.DESCRIPTOR.services_by_name["ParamServer"]
RANKER = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"]
USER, ITEM = paramserver_pb2.TABLE_USER, paramserver_pb2.TABLE_ITEM
I64 = np.int64


def _paramserver_calls(dim: int) -> list[tuple[str, object, dict]]:
    rows = np.random.default_rng(3).standard_normal((2, dim)).astype(np.float32)
    return [
        ("Lookup", paramserver_pb2.LookupRequest(table=USER), {"keys": np.array([1, 10**9, 3], I64)}),
        # 600 x 384 floats: within a 1 MiB slot
        ("Lookup", paramserver_pb2.LookupRequest(table=ITEM), {"keys": np.arange(1, 601, dtype=I64)}),
        ("Upsert", paramserver_pb2.UpsertRequest(table=ITEM), {"keys": np.array([7, 10**8], I64), "values": rows}),
        ("Lookup", paramserver_pb2.LookupRequest(table=ITEM), {"keys": np.array([7, 10**8], I64)}),
        ("Drift", paramserver_pb2.DriftRequest(user_id=4, item_id=9, event=common_pb2.EVENT_TYPE_LIKE), {}),
        ("Drift", paramserver_pb2.DriftRequest(user_id=10**7, item_id=2, event=common_pb2.EVENT_TYPE_CLICK), {}),
        ("Drift", paramserver_pb2.DriftRequest(user_id=4, item_id=9, event=common_pb2.EVENT_TYPE_IMPRESSION), {}),
        ("Lookup", paramserver_pb2.LookupRequest(table=USER), {"keys": np.array([4, 10**7], I64)}),
        ("Remove", paramserver_pb2.RemoveRequest(table=USER), {"keys": np.array([4, 10**7], I64)}),
        ("Lookup", paramserver_pb2.LookupRequest(table=USER), {"keys": np.array([4], I64)}),
        ("Snapshot", paramserver_pb2.SnapshotRequest(), {}),
        # bad input: same status and message on both paths
        ("Lookup", paramserver_pb2.LookupRequest(table=42), {"keys": np.array([1], I64)}),
        ("Upsert", paramserver_pb2.UpsertRequest(table=ITEM), {"keys": np.array([5], I64), "values": np.zeros((1, 3), np.float32)}),
        ("Upsert", paramserver_pb2.UpsertRequest(table=ITEM),
         {"keys": np.array([5], I64), "values": np.full((1, dim), np.nan, np.float32)}),
        ("Drift", paramserver_pb2.DriftRequest(user_id=1, item_id=10**9, event=common_pb2.EVENT_TYPE_LIKE), {}),
        ("Drift", paramserver_pb2.DriftRequest(user_id=1, item_id=1, event=0), {}),
        ("Lookup", paramserver_pb2.LookupRequest(table=USER), {}),
    ]


def _ranker_calls(catalog) -> list[tuple[str, object, dict]]:
    user = catalog.vector(3)
    return [
        ("Rank", ranker_pb2.RankRequest(user_id=3, k=20), {"user_vector": user}),
        ("Rank", ranker_pb2.RankRequest(user_id=3, k=20, include_labels=["music"], published_after=1,
                                        head_weights={"like": 2.0}, context=common_pb2.RequestContext(fields={"device": "tv"})),
         {"user_vector": user, "exclude": np.arange(1, 200, dtype=I64)}),
        ("Rank", ranker_pb2.RankRequest(k=10), {}),
        ("Rank", ranker_pb2.RankRequest(k=5, return_all_scores=True),
         {"user_vector": user, "candidates": np.arange(1, 2401, dtype=I64),
          "context_features": np.linspace(0, 1, 512, dtype=np.float32)}),
        ("Rank", ranker_pb2.RankRequest(k=5), {"context_features": np.zeros(4736, np.float32)}),
        ("Rank", ranker_pb2.RankRequest(k=0), {}),
        ("Rank", ranker_pb2.RankRequest(k=5), {"user_vector": np.zeros(3, np.float32)}),
        ("Rank", ranker_pb2.RankRequest(k=5), {"candidates": np.array([0], I64)}),
        ("Rank", ranker_pb2.RankRequest(k=5), {"user_vector": np.zeros(384, np.int64)}),
        ("Rank", ranker_pb2.RankRequest(k=5, head_weights={"joy": 1.0}), {}),
    ]


def _canonical(message) -> object:
    """The message without timings (they differ run to run), snapshot paths, or tensor fields (compared apart)."""
    message = type(message).FromString(message.SerializeToString())
    for name in tensor_fields(message.DESCRIPTOR):
        message.ClearField(name)
    if "hops" in message.DESCRIPTOR.fields_by_name:
        message.ClearField("hops")
    if isinstance(message, paramserver_pb2.SnapshotResponse):
        message.ClearField("path")
    return message


async def _outcomes(transport: Transport, calls) -> list:
    outcomes = []
    for name, request, tensors in calls:
        try:
            with await transport.call(name, type(request).FromString(request.SerializeToString()), tensors, timeout=10) as reply:
                outcomes.append(("ok", _canonical(reply.message), {k: v.copy() for k, v in reply.tensors.items()}))
        except FeedserveError as exc:
            outcomes.append(("error", exc.code, str(exc)))
    return outcomes


def _assert_same(ring: list, grpc_: list, calls) -> None:
    assert len(ring) == len(grpc_) == len(calls)
    for (name, _, _), a, b in zip(calls, ring, grpc_):
        assert a[0] == b[0], f"{name}: {a} != {b}"
        if a[0] == "error":
            assert a[1:] == b[1:], name
            continue
        assert a[1] == b[1], name
        assert a[2].keys() == b[2].keys(), name
        for key in a[2]:
            np.testing.assert_array_equal(a[2][key], b[2][key], err_msg=f"{name}.{key}")


async def _compare(make_core, descriptor, add, calls, service: str) -> None:
    """Two identical servers: one called over its ring, one over gRPC only; the same calls, the same answers."""
    async with AsyncExitStack() as stack:
        transports = []
        for use_ring in (True, False):
            core = make_core()
            server, ring = await serve_with_ring(service, descriptor, core.handlers(), lambda s, c=core: add(c, s))
            stack.callback(ring.stop)
            stack.push_async_callback(server.stop, 0)
            transport = Transport(service, f"127.0.0.1:{server.port}", descriptor, use_ring=use_ring)
            stack.push_async_callback(transport.close)
            transports.append(transport)
        over_ring = await _outcomes(transports[0], calls)
        over_grpc = await _outcomes(transports[1], calls)
        assert transports[0].calls["grpc"] == 0 and transports[0].calls["ring"] == len(calls) - sum(o[0] == "error" for o in over_ring)
        assert transports[1].calls["ring"] == 0
        _assert_same(over_ring, over_grpc, calls)
        assert any(o[0] == "error" for o in over_ring) and any(o[0] == "ok" for o in over_ring)


class TestContract:
    def test_every_paramserver_rpc_is_equal_over_ring_and_grpc(self, catalog, tmp_path: Path, run) -> None:
        """Lookup, Upsert, Drift, Remove and Snapshot, good and bad input: identical messages, tensors, statuses."""
        dirs = iter([tmp_path / "a", tmp_path / "b"])
        run(_compare(
            lambda: paramserver_core(catalog, next(dirs)), PARAMSERVER,
            lambda core, s: paramserver_pb2_grpc.add_ParamServerServicer_to_server(ParamServerServicer(core), s),
            _paramserver_calls(catalog.dim), "paramserver",
        ))

    def test_every_ranker_rpc_is_equal_over_ring_and_grpc(self, catalog, manifest, run) -> None:
        """Rank for a known user, a cold start, given candidates with all scores, and bad input."""
        run(_compare(
            lambda: ranker_for(catalog, manifest), RANKER,
            lambda core, s: ranker_pb2_grpc.add_RankerServicer_to_server(RankerServicer(core), s),
            _ranker_calls(catalog), "ranker",
        ))
