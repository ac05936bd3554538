"""Cost accounting: every feed is priced from the CPU of its hops, summed per feature tag, with alerts."""

from __future__ import annotations

import grpc
import pytest

from feedserve.v1 import common_pb2, gateway_pb2
from gateway.cost import CostLedger, request_cpu_seconds
from tests.stack import running_stack


def _feed(user: int, tag: str) -> gateway_pb2.FeedRequest:
    return gateway_pb2.FeedRequest(user_id=user, context=common_pb2.RequestContext(feature_tag=tag))


def test_feeds_are_priced_and_summed_per_feature_tag(catalog, manifest, tmp_path, run) -> None:
    async def body() -> None:
        async with running_stack(catalog, manifest, tmp_path, ledger=CostLedger(cpu_second_price=1.0)) as stack:
            replies = [await stack.gateway.Feed(_feed(u, "home"), timeout=10) for u in (1, 2, 3)]
            await stack.gateway.Feed(_feed(4, "explore"), timeout=10)
            for reply in replies:
                assert reply.cost > 0
                assert reply.cost == pytest.approx(request_cpu_seconds(reply))
                assert any(h.service == "ranker" and h.cpu_ns > 0 for h in reply.hops)
            report = await stack.admin.GetCost(gateway_pb2.GetCostRequest(window_s=60), timeout=5)
            by_tag = {f.feature_tag: f for f in report.features}
            assert by_tag["home"].requests == 3 and by_tag["explore"].requests == 1
            assert by_tag["home"].cost == pytest.approx(sum(r.cost for r in replies), rel=1e-6)
            assert by_tag["home"].cost_per_1k == pytest.approx(by_tag["home"].cost * 1000 / 3)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stack.admin.GetCost(gateway_pb2.GetCostRequest(window_s=7200), timeout=5)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "window_s" in caught.value.details()

    run(body())


def test_crossing_the_alert_threshold_is_counted_once_per_crossing() -> None:
    ledger = CostLedger(cpu_second_price=1.0, alert_per_1k=5.0)  # 5 per 1,000 requests = 5 ms of CPU each
    ledger.record("cheap", 0.001)
    ledger.record("dear", 0.010)
    ledger.record("dear", 0.010)  # still above: the same crossing
    assert ledger.alerts["dear"] == 1 and ledger.alerts["cheap"] == 0
    for _ in range(20):
        ledger.record("dear", 0.0)  # the minute's average falls back under the threshold
    ledger.record("dear", 1.0)
    assert ledger.alerts["dear"] == 2


def test_tags_past_the_cap_are_booked_as_other_so_invented_tags_grow_nothing() -> None:
    """With room for 3 tags, a fourth and every later new tag land on "other"; known tags keep their own rows,
    and the report has at most 3 + 1 rows however many tags a client invents."""
    ledger = CostLedger(cpu_second_price=1.0, max_tags=3)
    for tag in ("home", "search", "email"):
        ledger.record(tag, 0.001)
    for n in range(1000):
        ledger.record(f"invented-{n}", 0.001)
    ledger.record("home", 0.001)
    rows = {f.feature_tag: f.requests for f in ledger.report(60).features}
    assert rows == {"home": 2, "search": 1, "email": 1, "other": 1000}
