"""The gateway under pressure: deadlines, a killed ranker, burst modes, overload, and the feed cache."""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import grpc
import pytest

from feedserve.v1 import common_pb2, gateway_pb2, generator_pb2, ranker_pb2_grpc
from gateway.dashboard import Dashboard
from gateway.metrics import GatewayMetrics
from mesh.grpc_server import start_server
from mesh.methods import serve_unary
from ranker.service import Ranker, RankerServicer
from tests.stack import ranker_for, running_stack


class HeldRanker(RankerServicer):
    """The real ranker, except that known users' calls wait until the test lets them go (a slow dependency)."""

    def __init__(self, core: Ranker) -> None:
        super().__init__(core)
        self.release = threading.Event()

    async def Rank(self, request, context):
        if request.user_id:  # the fallback feed (a cold-start call) is never held
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        return serve_unary(self.core.rank, request)


def _feed(user: int, k: int = 20) -> gateway_pb2.FeedRequest:
    return gateway_pb2.FeedRequest(user_id=user, k=k)


class TestDeadlines:
    def test_a_deadline_shorter_than_ranking_still_returns_a_degraded_feed_in_time(self, catalog, manifest, tmp_path, run) -> None:
        """The ranker does not answer within the caller's deadline: the gateway answers before it, degraded.
        (Had it overrun, the client's own deadline would have failed the call.)"""
        held = HeldRanker(ranker_for(catalog, manifest))

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, ranker=held) as stack:
                try:
                    reply = await stack.gateway.Feed(_feed(3), timeout=0.25)
                    assert reply.degraded and reply.degraded_reason.startswith("ranker too slow")
                    assert len(reply.items) == 20
                finally:
                    held.release.set()

        run(body())

    def test_the_cached_feed_is_preferred_to_the_fallback(self, catalog, manifest, tmp_path, run) -> None:
        held = HeldRanker(ranker_for(catalog, manifest))
        held.release.set()

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, ranker=held, cache=None) as stack:
                first = await stack.gateway.Feed(_feed(4), timeout=5)
                stack.service.cache.ttl_s = 0  # the entry is stale now, but kept for degradation
                held.release.clear()
                try:
                    reply = await stack.gateway.Feed(_feed(4), timeout=0.25)
                finally:
                    held.release.set()
                assert reply.degraded and reply.cached and reply.degraded_reason.endswith("cached feed")
                assert [i.item_id for i in reply.items] == [i.item_id for i in first.items]

        run(body())


class TestCircuitBreaker:
    def test_a_killed_ranker_gives_flagged_fallbacks_then_service_recovers(self, catalog, manifest, tmp_path, run) -> None:
        """Ranker stopped: fallback feeds, the circuit opens; ranker back on the same port: normal feeds again."""
        core = ranker_for(catalog, manifest)

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, breaker_cooldown_s=0.05) as stack:
                port = stack.ports["ranker"]
                await stack.servers["ranker"].stop(0)
                for user in range(10, 16):
                    reply = await stack.gateway.Feed(_feed(user), timeout=2)
                    assert reply.degraded and "fallback" in reply.degraded_reason
                assert stack.service.breakers["ranker"].state != "closed"
                servicer = RankerServicer(core)
                revived = await start_server(
                    {"feedserve.v1.Ranker": lambda s: ranker_pb2_grpc.add_RankerServicer_to_server(servicer, s)},
                    f"127.0.0.1:{port}")
                try:
                    await asyncio.wait_for(stack.service.ranker.transport.channel.channel_ready(), 20)
                    for user in range(100, 400):  # bounded: each call either probes or is refused at once
                        reply = await stack.gateway.Feed(_feed(user), timeout=2)
                        if not reply.degraded:
                            break
                    assert not reply.degraded and stack.service.breakers["ranker"].state == "closed"
                finally:
                    await revived.stop(0)

        run(body())


class TestModes:
    def test_forced_emergency_turns_generation_off_and_shrinks_ranking(self, catalog, manifest, tmp_path, run) -> None:
        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                status = await stack.admin.SetMode(gateway_pb2.SetModeRequest(mode=gateway_pb2.MODE_EMERGENCY))
                assert status.forced and status.mode == gateway_pb2.MODE_EMERGENCY
                assert not status.generation_enabled and status.candidate_count == 400
                assert status.batch_delay_us == 2_000  # the ranker may batch feeds in an emergency
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in stack.gateway.Generate(generator_pb2.GenerateRequest(prompt="hi"), timeout=5):
                        pass
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "emergency" in caught.value.details()
                reply = await stack.gateway.Feed(_feed(7), timeout=5)
                assert reply.mode == gateway_pb2.MODE_EMERGENCY
                back = await stack.admin.SetMode(gateway_pb2.SetModeRequest(mode=gateway_pb2.MODE_UNSPECIFIED))
                assert not back.forced and back.mode == gateway_pb2.MODE_NORMAL

        run(body())

    def test_the_automatic_switch_climbs_with_latency_and_steps_down_with_hysteresis(self, monkeypatch) -> None:
        import gateway.modes as modes

        clock = [100.0]
        monkeypatch.setattr(modes.time, "monotonic", lambda: clock[0])
        controller = modes.ModeController()
        for _ in range(30):
            controller.observe(0.3)  # 300 ms responses
        assert controller.current == gateway_pb2.MODE_EMERGENCY
        for _ in range(200):
            controller.observe(0.001)
        assert controller.current == gateway_pb2.MODE_EMERGENCY  # held: no flapping
        clock[0] += 3
        controller.observe(0.001)
        assert controller.current == gateway_pb2.MODE_SURGE
        clock[0] += 3
        controller.observe(0.001)
        assert controller.current == gateway_pb2.MODE_NORMAL


class TestOverload:
    def test_load_beyond_capacity_gets_resource_exhausted(self, catalog, manifest, tmp_path, run) -> None:
        """With 2 feeds in flight allowed and the ranker held, 6 concurrent feeds: 4 are shed at once."""
        held = HeldRanker(ranker_for(catalog, manifest))

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, ranker=held, max_in_flight=2) as stack:
                calls = [asyncio.ensure_future(stack.gateway.Feed(_feed(20 + i), timeout=10)) for i in range(6)]
                while stack.service.modes.in_flight < 2:  # the first two are inside; wait on the state, bounded by the loop
                    await asyncio.sleep(0)
                while sum(c.done() for c in calls) < 4:  # the ranker is still held: only a shed call can end
                    await asyncio.sleep(0)
                shed = [c for c in calls if c.done()]
                assert all(c.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in shed)
                held.release.set()
                results = await asyncio.gather(*calls, return_exceptions=True)
                codes = [r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)]
                assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
                assert sum(1 for r in results if isinstance(r, gateway_pb2.FeedResponse)) == 2
                assert all(isinstance(r, gateway_pb2.FeedResponse) for c, r in zip(calls, results) if c not in shed)

        run(body())


class TestCache:
    def test_an_interaction_invalidates_that_users_cached_feed(self, catalog, manifest, tmp_path, run) -> None:
        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                first = await stack.gateway.Feed(_feed(8), timeout=5)
                again = await stack.gateway.Feed(_feed(8), timeout=5)
                other = await stack.gateway.Feed(_feed(9), timeout=5)
                assert not first.cached and again.cached and not other.cached
                await stack.gateway.Interact(gateway_pb2.InteractRequest(
                    user_id=8, item_id=first.items[0].item_id, event=common_pb2.EVENT_TYPE_LIKE), timeout=5)
                after = await stack.gateway.Feed(_feed(8), timeout=5)
                assert not after.cached
                assert (await stack.gateway.Feed(_feed(9), timeout=5)).cached  # other users keep theirs

        run(body())


def test_metrics_expose_requests_hops_cache_and_mode(catalog, manifest, tmp_path, run) -> None:
    async def body() -> None:
        async with running_stack(catalog, manifest, tmp_path) as stack:
            dashboard = Dashboard(stack.service)
            stack.service.on_answer = dashboard.observe
            port = dashboard.serve("127.0.0.1", 0, GatewayMetrics(stack.service))
            await stack.gateway.Feed(_feed(11), timeout=5)
            await stack.gateway.Feed(_feed(11), timeout=5)
            text = await asyncio.get_running_loop().run_in_executor(
                None, lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
            assert 'feedserve_hop_seconds_count{service="ranker",stage="model"}' in text
            assert 'feedserve_requests_total{method="/feedserve.v1.Gateway/Feed",status="OK"}' in text
            assert "feedserve_cache_hits_total 1.0" in text
            assert "feedserve_mode 1.0" in text and "feedserve_in_flight 0.0" in text

    run(body())
