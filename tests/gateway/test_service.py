"""The whole Feed path through real gRPC servers: gateway -> paramserver and ranker."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from feedserve.v1 import common_pb2, gateway_pb2, generator_pb2, paramserver_pb2
from mesh.tensors import from_tensor, to_tensor
from tests.stack import running_stack


def _feed(user: int, k: int | None = None) -> gateway_pb2.FeedRequest:
    request = gateway_pb2.FeedRequest(user_id=user)
    if k is not None:
        request.k = k
    return request


async def _user_vector(stack, user: int) -> np.ndarray:
    reply = await stack.paramserver.Lookup(
        paramserver_pb2.LookupRequest(table=paramserver_pb2.TABLE_USER, keys=to_tensor(np.array([user], np.int64)))
    )
    return from_tensor(reply.values, "values")[0].copy()


class TestFeed:
    def test_feed_returns_twenty_items_with_hops_from_every_service(self, catalog, manifest, tmp_path, run) -> None:
        """Default k is 20; the breakdown holds gateway, paramserver and ranker stages."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                reply = await stack.gateway.Feed(_feed(1), timeout=10)
                assert len(reply.items) == 20 and not reply.cold_start
                assert len({item.item_id for item in reply.items}) == 20
                assert {h.service for h in reply.hops} == {"gateway", "paramserver", "ranker"}
                assert all(h.end_ns >= h.start_ns > 0 for h in reply.hops)
                assert reply.request_id and reply.model_version == f"{manifest.name}/{manifest.version}"

        run(body())

    def test_feed_interact_feed_moves_the_user_and_changes_the_feed(self, catalog, manifest, tmp_path, run) -> None:
        """A like moves the user vector 10% toward the item, and the next Feed's scores differ."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                first = await stack.gateway.Feed(_feed(5, 50), timeout=10)
                before = await _user_vector(stack, 5)
                item = first.items[-1].item_id
                moved = await stack.gateway.Interact(
                    gateway_pb2.InteractRequest(user_id=5, item_id=item, event=common_pb2.EVENT_TYPE_LIKE), timeout=10
                )
                assert moved.applied and moved.rate == pytest.approx(0.1)
                after = await _user_vector(stack, 5)
                target = catalog.item_vectors[item - 1]
                assert float(after @ target) > float(before @ target)
                second = await stack.gateway.Feed(_feed(5, 50), timeout=10)
                score = {i.item_id: i.score for i in second.items}
                assert score.get(item, 0) > first.items[-1].score or [i.item_id for i in second.items] != [
                    i.item_id for i in first.items
                ]

        run(body())

    def test_the_gateway_legs_lie_in_order_inside_its_handling_and_nest_the_downstream_hops(
        self, catalog, manifest, tmp_path, run
    ) -> None:
        """The gateway's two calls lie one after the other inside its handling span (the rest is its own work,
        whose size is the benchmarks' business); each service's stages lie inside the gateway call that waited
        for them."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                reply = await stack.gateway.Feed(_feed(6, 50), timeout=10)
                by = {(h.service, h.stage): h for h in reply.hops}
                handle = by[("gateway", "handle")]
                legs = [by[("gateway", "paramserver_call")], by[("gateway", "ranker_call")]]
                span = lambda h: h.end_ns - h.start_ns  # noqa: E731
                assert handle.start_ns <= legs[0].start_ns <= legs[0].end_ns <= legs[1].start_ns
                assert legs[1].start_ns <= legs[1].end_ns <= handle.end_ns
                assert sum(span(h) for h in legs) <= span(handle)
                for service, call in (("paramserver", legs[0]), ("ranker", legs[1])):
                    for hop in (h for h in reply.hops if h.service == service):
                        assert call.start_ns <= hop.start_ns <= hop.end_ns <= call.end_ns

        run(body())

    def test_unknown_user_gets_a_cold_start_feed(self, catalog, manifest, tmp_path, run) -> None:
        """A user with no vector gets a full feed, ranked from the model's cold-start vector, flagged cold start."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                reply = await stack.gateway.Feed(_feed(10**9, 10), timeout=10)
                assert reply.cold_start and not reply.degraded and len(reply.items) == 10

        run(body())

    @pytest.mark.parametrize(
        "request_, field",
        [
            (_feed(0), "user_id"),
            (_feed(1, 0), "k"),
            (_feed(1, 501), "k"),
            (gateway_pb2.FeedRequest(user_id=1, context=common_pb2.RequestContext(feature_tag="x" * 65)),
             "context.feature_tag"),
            (gateway_pb2.FeedRequest(user_id=1, context=common_pb2.RequestContext(feature_tag="Home Feed")),
             "context.feature_tag"),
            (gateway_pb2.FeedRequest(user_id=1, exclude_ids=range(1, 1002)), "exclude_ids"),
            (gateway_pb2.FeedRequest(user_id=1, exclude_labels=["x"] * 1001), "exclude_labels"),
            (gateway_pb2.FeedRequest(user_id=1, include_labels=["x" * 257]), "include_labels[0]"),
        ],
    )
    def test_bad_feed_request_names_the_field(self, catalog, manifest, tmp_path, run, request_, field) -> None:
        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stack.gateway.Feed(request_, timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details().startswith(field)

        run(body())


    def test_a_request_over_the_public_message_limit_is_resource_exhausted_and_the_gateway_serves_on(
            self, catalog, manifest, tmp_path, run) -> None:
        """A 5 MiB Feed request (gRPC refuses it before it is parsed: 4 MiB on the public port), then a plain
        feed answers on the same gateway."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                huge = gateway_pb2.FeedRequest(user_id=1, exclude=["x" * 1024] * 5 * 1024)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stack.gateway.Feed(huge, timeout=10)
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert len((await stack.gateway.Feed(_feed(1, 5), timeout=10)).items) == 5

        run(body())


class TestInteract:
    @pytest.mark.parametrize(
        "user, item, event, code, field",
        [
            (0, 1, common_pb2.EVENT_TYPE_LIKE, grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
            (1, 0, common_pb2.EVENT_TYPE_LIKE, grpc.StatusCode.INVALID_ARGUMENT, "item_id"),
            (1, 1, common_pb2.EVENT_TYPE_UNSPECIFIED, grpc.StatusCode.INVALID_ARGUMENT, "event"),
            (1, 1, 1234, grpc.StatusCode.INVALID_ARGUMENT, "event"),
            (1, 10**9, common_pb2.EVENT_TYPE_LIKE, grpc.StatusCode.NOT_FOUND, "item_id"),
        ],
    )
    def test_bad_interaction_is_rejected_and_the_user_is_unchanged(
        self, catalog, manifest, tmp_path, run, user, item, event, code, field
    ) -> None:
        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                before = await _user_vector(stack, 1)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stack.gateway.Interact(
                        gateway_pb2.InteractRequest(user_id=user, item_id=item, event=event), timeout=10
                    )
                assert caught.value.code() == code
                assert field in caught.value.details()
                np.testing.assert_array_equal(before, await _user_vector(stack, 1))

        run(body())


class TestDependencies:
    @pytest.mark.parametrize("down", ["paramserver", "ranker"])
    def test_a_dependency_down_gives_a_flagged_fallback_naming_it(self, catalog, manifest, tmp_path, run, down) -> None:
        """With a backend stopped, Feed answers at once with the popular/fresh fallback, degraded, naming the service."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                await stack.servers[down].stop(0)
                reply = await stack.gateway.Feed(_feed(10**9 - 1), timeout=3)
                assert reply.degraded and reply.degraded_reason.startswith(f"{down} unavailable")
                assert len(reply.items) == 20

        run(body())

    def test_no_fallback_yet_gives_unavailable_naming_the_service(self, catalog, manifest, tmp_path, run) -> None:
        """A gateway that never reached its ranker has no fallback: UNAVAILABLE naming it, well within the deadline."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                await stack.servers["ranker"].stop(0)
                stack.service.fallback = None
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stack.gateway.Feed(_feed(1), timeout=3)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "ranker" in caught.value.details()

        run(body())


class TestServing:
    def test_health_and_reflection_answer_on_every_service(self, catalog, manifest, tmp_path, run) -> None:
        """Each service reports SERVING and lists its own service (plus health) through reflection."""
        expected = {
            "gateway": "feedserve.v1.Gateway",
            "paramserver": "feedserve.v1.ParamServer",
            "ranker": "feedserve.v1.Ranker",
        }

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                for name, port in stack.ports.items():
                    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                        health = await health_pb2_grpc.HealthStub(channel).Check(
                            health_pb2.HealthCheckRequest(service=expected[name]), timeout=5
                        )
                        assert health.status == health_pb2.HealthCheckResponse.SERVING
                        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                        async for reply in stub.ServerReflectionInfo(
                            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                        ):
                            services = {s.name for s in reply.list_services_response.service}
                            assert {expected[name], "grpc.health.v1.Health"} <= services

        run(body())

    def test_generate_without_a_generator_says_it_is_not_deployed(self, catalog, manifest, tmp_path, run) -> None:
        """A gateway started without --generator answers Generate with UNIMPLEMENTED and the reason, not a hang."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in stack.gateway.Generate(generator_pb2.GenerateRequest(prompt="hi"), timeout=5):
                        pass
                assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
                assert "--generator" in caught.value.details()

        run(body())
