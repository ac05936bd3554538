"""Table lifecycle through the service core: expiry, frequency admission, shard ownership; and metrics."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest

from errors import InvalidArgument
from feedserve.v1 import paramserver_pb2
from mesh.methods import HeapOutputs
from mesh.shards import SlotRange, slot_of
from paramserver.metrics import serve_metrics
from paramserver.service import TableConfig
from tests.stack import paramserver_core

USER = paramserver_pb2.TABLE_USER


def _upsert(core, keys, dim):
    return core.upsert(paramserver_pb2.UpsertRequest(table=USER),
                       {"keys": np.array(keys, np.int64), "values": np.ones((len(keys), dim), np.float32)}, HeapOutputs())


def _found(core, keys) -> list[bool]:
    out = HeapOutputs()
    core.lookup(paramserver_pb2.LookupRequest(table=USER), {"keys": np.array(keys, np.int64)}, out)
    return out.arrays["found"].astype(bool).tolist()


class TestLifecycle:
    def test_new_users_get_a_row_after_n_upserts(self, catalog, tmp_path: Path) -> None:
        core = paramserver_core(catalog, tmp_path, users=TableConfig(admit_after=3))
        dim = catalog.dim
        assert _upsert(core, [10**8], dim).upserted == 0 and _upsert(core, [10**8], dim).upserted == 0
        assert _found(core, [10**8]) == [False]
        assert _upsert(core, [10**8], dim).upserted == 1 and _found(core, [10**8]) == [True]
        assert _found(core, [1]) == [True]  # the catalog's users were admitted at start
        core.close()

    def test_expired_users_are_dropped(self, catalog, tmp_path: Path, monkeypatch) -> None:
        import paramserver.service as service

        clock = [1_000_000]
        monkeypatch.setattr(service, "_now", lambda: clock[0])
        core = paramserver_core(catalog, tmp_path, users=TableConfig(ttl_s=60))
        _upsert(core, [10**8], catalog.dim)
        clock[0] += 61
        _upsert(core, [10**8 + 1], catalog.dim)
        assert _found(core, [10**8, 10**8 + 1]) == [False, True]
        assert core.expire() >= 1
        core.close()

    def test_a_shard_refuses_users_outside_its_slots(self, catalog, tmp_path: Path) -> None:
        core = paramserver_core(catalog, tmp_path, slots=SlotRange(0, 8191))
        mine, theirs = (int(k) for k in (np.flatnonzero(slot_of(np.arange(1, 500)) < 8192)[0] + 1,
                                         np.flatnonzero(slot_of(np.arange(1, 500)) >= 8192)[0] + 1))
        assert _found(core, [mine]) == [True]
        with pytest.raises(InvalidArgument, match="slots 0-8191"):
            _found(core, [theirs])
        assert core.tables[USER].size < len(catalog.user_ids)  # only its own users were loaded
        core.close()


def test_metrics_report_rows_bytes_hits_misses_and_wal_lag(catalog, tmp_path: Path) -> None:
    core = paramserver_core(catalog, tmp_path)
    _found(core, [1, 2, 10**9])
    port = serve_metrics(core, "127.0.0.1", 0)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'feedserve_paramserver_rows{{table="user"}} {float(len(catalog.user_ids))}' in text
    assert 'feedserve_paramserver_hits_total{table="user"} 2.0' in text
    assert 'feedserve_paramserver_misses_total{table="user"} 1.0' in text
    for name in ("feedserve_paramserver_bytes", "feedserve_paramserver_wal_lag_bytes", "feedserve_paramserver_wal_lag_seconds"):
        assert name in text
    core.close()


def test_shard_specs_split_the_slots_evenly() -> None:
    from mesh.shards import SLOTS, shard_slots

    assert [str(shard_slots(f"{i}/2")) for i in range(2)] == ["0-8191", "8192-16383"]
    assert shard_slots("2/3").last == SLOTS - 1
    with pytest.raises(ValueError, match="INDEX/COUNT"):
        shard_slots("3/3")
