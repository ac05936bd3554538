"""The model lifecycle through the gateway: admin RPCs change the registry in the store, feeds follow it, online metrics and the
propensity log add up, guardrails roll a bad canary back and leave a healthy one alone. (One event loop each: the
lifecycle does not depend on which.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from catalog import Store, open_store
from catalog.registry import Family, Guardrails
from engines.base import load_manifest
from feedserve.v1 import common_pb2, gateway_pb2
from gateway.guardrails import GuardrailWatch, breach
from gateway.online import ONLINE_K, OnlineMetrics, Tally
from gateway.rollout import GatewayRouting
from tests.catalog.test_registry import version_dir
from tests.ranker.test_rollout import copy_version
from tests.stack import grpc_status, running_stack


@pytest.fixture
def models(manifest, tmp_path: Path) -> Path:
    """Versions 1 and 2 of the catalog's model in a models folder."""
    root = tmp_path / "models" / manifest.name
    copy_version(manifest, root, "1")
    copy_version(manifest, root, "2")
    return root


def _feed(user: int, k: int = 20) -> gateway_pb2.FeedRequest:
    return gateway_pb2.FeedRequest(user_id=user, k=k, include_seen=True)  # an option: never from the feed cache


async def _settle(stack) -> None:
    stack.service.routing.watcher.check()
    assert stack.ranker_core.rollout.settle(120)


class TestAdmin:
    def test_stage_and_canary_through_the_admin_rpcs_route_each_user_to_their_version(
            self, catalog, models, tmp_path) -> None:
        """StageModel then CanaryModel (50%) through GatewayAdmin: each feed says which version answered, and that
        is the version the salted hash gives its user; ListModels shows the states."""
        first = models / "1"

        async def body() -> None:
            async with running_stack(catalog, load_manifest(first), tmp_path, routing=True) as stack:
                listed = await stack.admin.StageModel(gateway_pb2.StageModelRequest(directory=str(models / "2")), timeout=30)
                states = {v.version: v.state for v in listed.families[0].versions}
                assert states == {"1": "primary", "2": "staged"}
                await stack.admin.CanaryModel(gateway_pb2.CanaryRequest(family="ranker-mlp", version="2", share=0.5),
                                              timeout=30)
                await _settle(stack)
                family = stack.service.routing.store.registry().family("ranker-mlp")
                users = [int(u) for u in catalog.user_ids[:30]]
                for user in users:
                    reply = await stack.gateway.Feed(_feed(user), timeout=10)
                    assert reply.model_version == f"ranker-mlp/{family.route(user)}"
                    assert [item.position for item in reply.items] == list(range(len(reply.items)))
                assert {family.route(u) for u in users} == {"1", "2"}
                listed = await stack.admin.ListModels(gateway_pb2.ListModelsRequest(), timeout=30)
                versions = {v.version: v for v in listed.families[0].versions}
                assert versions["2"].state == "canary" and "staged -> canary" in versions["2"].last_change
                assert versions["1"].online.feeds + versions["2"].online.feeds == len(users)

        asyncio.run(body())

    def test_a_version_over_the_memory_budget_is_refused_with_resource_exhausted(self, catalog, models, tmp_path) -> None:
        """With a budget below two resident versions, CanaryModel is RESOURCE_EXHAUSTED naming the budget, and the
        registry is unchanged."""

        async def body() -> None:
            async with running_stack(catalog, load_manifest(models / "1"), tmp_path, routing=True) as stack:
                await stack.admin.StageModel(gateway_pb2.StageModelRequest(directory=str(models / "2")), timeout=30)
                registry = stack.service.routing.store
                family = registry.registry().family("ranker-mlp")
                registry.change_registry(lambda r: setattr(r.family("ranker-mlp"), "memory_budget_bytes",
                                                       family.versions["1"].footprint_bytes + 1))
                code, details = await grpc_status(stack.admin.CanaryModel(
                    gateway_pb2.CanaryRequest(family="ranker-mlp", version="2"), timeout=30))
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "memory budget" in details
                assert registry.registry().family("ranker-mlp").versions["2"].state == "staged"

        asyncio.run(body())

    def test_bad_lifecycle_requests_name_the_field(self, catalog, models, tmp_path) -> None:

        async def body() -> None:
            async with running_stack(catalog, load_manifest(models / "1"), tmp_path,
                                     routing=True) as stack:
                for call, field in (
                        (stack.admin.StageModel(gateway_pb2.StageModelRequest(directory="/nowhere"), timeout=10), "directory"),
                        (stack.admin.PromoteModel(gateway_pb2.ModelVersionRequest(family="ranker-mlp", version="7"),
                                                  timeout=10), "version"),
                        (stack.admin.CanaryModel(gateway_pb2.CanaryRequest(family="", version="2"), timeout=10), "family"),
                        (stack.admin.CanaryModel(gateway_pb2.CanaryRequest(family="ranker-mlp", version="2", share=0.9),
                                                 timeout=10), "share"),
                        (stack.admin.CanaryModel(gateway_pb2.CanaryRequest(family="ranker-mlp", version="1"),
                                                 timeout=10), "primary already")):
                    code, details = await grpc_status(call)
                    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                    grpc.StatusCode.FAILED_PRECONDITION) and field in details

        asyncio.run(body())


def test_the_online_metrics_add_up_to_the_logged_interactions(catalog, models, tmp_path) -> None:
    """Feeds and the interactions naming them: per version, the counted feeds, clicks at k, likes and skips equal
    what the propensity log holds (degraded feeds are logged, not counted); an interaction naming an unknown feed,
    or another user's feed, is accepted and not attributed."""
    log = tmp_path / "served.jsonl"

    async def body() -> None:
        async with running_stack(catalog, load_manifest(models / "1"), tmp_path, routing=True,
                                 served_log=log) as stack:
            await stack.admin.StageModel(gateway_pb2.StageModelRequest(directory=str(models / "2")), timeout=30)
            await stack.admin.CanaryModel(gateway_pb2.CanaryRequest(family="ranker-mlp", version="2", share=0.5),
                                          timeout=30)
            await _settle(stack)
            events = [common_pb2.EVENT_TYPE_CLICK, common_pb2.EVENT_TYPE_LIKE, common_pb2.EVENT_TYPE_SKIP,
                      common_pb2.EVENT_TYPE_IMPRESSION]
            for n, user in enumerate(int(u) for u in catalog.user_ids[:16]):
                reply = await stack.gateway.Feed(_feed(user), timeout=10)
                for m, position in enumerate((0, 3, ONLINE_K + 2, 7)):
                    item = reply.items[position].item_id
                    await stack.gateway.Interact(gateway_pb2.InteractRequest(
                        user_id=user, item_id=item, event=events[(n + m) % len(events)],
                        feed_request_id=reply.request_id), timeout=10)
            await stack.gateway.Interact(gateway_pb2.InteractRequest(
                user_id=int(catalog.user_ids[0]), item_id=1, event=common_pb2.EVENT_TYPE_CLICK,
                feed_request_id="no-such-feed"), timeout=10)
            # a feed's id is the server's, not the x-request-id the client chose, and it counts only for the user
            # it was served to: another user naming it (clicking an item it showed) is not attributed
            chosen = await stack.gateway.Feed(_feed(int(catalog.user_ids[0])), timeout=10,
                                              metadata=(("x-request-id", "client-chosen"),))
            assert chosen.request_id and chosen.request_id != "client-chosen"
            await stack.gateway.Interact(gateway_pb2.InteractRequest(
                user_id=int(catalog.user_ids[1]), item_id=chosen.items[0].item_id, event=common_pb2.EVENT_TYPE_CLICK,
                feed_request_id=chosen.request_id), timeout=10)
            online = stack.service.online
            online.log.flush()
            records = [json.loads(line) for line in log.read_text().splitlines()]
            expected: dict[str, Tally] = {}
            for record in records:
                tally = expected.setdefault(record["version"], Tally())
                if record["type"] == "feed" and not record["degraded"]:
                    tally.feeds += 1
                    tally.impressions += sum(1 for _, position, _ in record["items"] if position < ONLINE_K)
                elif record["type"] == "interaction":
                    clicked = record["event"] in (2, 3, 4, 5)
                    tally.clicks_at_k += clicked and record["position"] < ONLINE_K
                    tally.likes += record["event"] == common_pb2.EVENT_TYPE_LIKE
                    tally.skips += record["event"] == common_pb2.EVENT_TYPE_SKIP
                    tally.interactions += 1
            assert set(expected) == {"ranker-mlp/1", "ranker-mlp/2"}
            for version, tally in expected.items():
                counted = online.totals[version]
                assert (counted.feeds, counted.impressions, counted.clicks_at_k, counted.likes, counted.skips,
                        counted.interactions) == (tally.feeds, tally.impressions, tally.clicks_at_k, tally.likes,
                                                  tally.skips, tally.interactions)
            assert sum(t.interactions for t in expected.values()) == 16 * 4 and online.unattributed == 2

    asyncio.run(body())


def _tally(feeds: int, clicks: int, impressions_per_feed: int = ONLINE_K, errors: int = 0,
           latency_ms: float = 10.0) -> Tally:
    tally = Tally(feeds=feeds, errors=errors, impressions=feeds * impressions_per_feed, clicks_at_k=clicks)
    tally.latencies_ms.extend([latency_ms] * feeds)
    return tally


class TestGuardrails:
    def test_a_click_through_drop_breaches_only_with_enough_sample(self) -> None:
        rules = Guardrails(min_feeds=100)
        assert breach(rules, _tally(99, 10), _tally(500, 500)) is None  # too few canary feeds to judge
        found = breach(rules, _tally(200, 40), _tally(2000, 2000))
        assert found is not None and found.rule == "min_ctr_ratio"

    def test_a_healthy_canary_is_not_rolled_back(self, tmp_path) -> None:
        """Click-through a little lower by chance, the same latency, no errors: no breach, the canary stays."""
        store, metrics = self._canary_routing(tmp_path)
        metrics.trial = {"ranker-mlp/1": _tally(2000, 2000), "ranker-mlp/2": _tally(200, 190)}
        watch = GuardrailWatch(store, metrics)
        assert watch.check(store.registry().family("ranker-mlp")) is None
        assert store.registry().family("ranker-mlp").canary == "2" and not watch.rollbacks

    def test_a_breached_guardrail_rolls_the_canary_back_and_says_why(self, tmp_path) -> None:
        """Errors over the rate, then a P99 far over the primary's: each rolls the canary back in the registry, with
        the rule in the version's last change."""
        for canary, rule in ((_tally(100, 100, errors=10), "max_error_rate"),
                             (_tally(200, 200, latency_ms=90.0), "max_p99_ratio")):
            store, metrics = self._canary_routing(tmp_path / rule)
            metrics.trial = {"ranker-mlp/1": _tally(2000, 2000), "ranker-mlp/2": canary}
            watch = GuardrailWatch(store, metrics)
            found = watch.check(store.registry().family("ranker-mlp"))
            assert found is not None and found.rule == rule
            family = store.registry().family("ranker-mlp")
            assert family.canary is None and family.versions["2"].state == "retired"
            assert f"guardrail {rule} breached" in family.versions["2"].last_change
            assert watch.rollbacks[0]["version"] == "2"

    def test_two_gateways_judging_one_bad_canary_roll_it_back_once(self, tmp_path) -> None:
        """Two gateways' watches on one registry (each with its own connection to the store and its own counts
        showing the breach) and the family as each last read it: the first rolls the canary back; the second finds
        it gone, records nothing and says nothing happened; the registry's history holds one rollback."""
        store, metrics = self._canary_routing(tmp_path)
        metrics.trial = {"ranker-mlp/1": _tally(2000, 2000), "ranker-mlp/2": _tally(100, 100, errors=10)}
        other = open_store(tmp_path / "catalog.db")  # the second gateway's own connection
        first, second = GuardrailWatch(store, metrics), GuardrailWatch(other, metrics)
        seen = store.registry().family("ranker-mlp")  # both read the registry before either wrote
        assert first.check(seen) is not None and second.check(seen) is None
        assert len(first.rollbacks) == 1 and not second.rollbacks
        history = other.registry().family("ranker-mlp").versions["2"].history
        assert sum("breached" in str(change) for change in history) == 1

    def test_two_replicas_each_too_small_to_judge_roll_back_once_on_their_summed_counts(self, tmp_path) -> None:
        """Two gateways on one store each route 60 feeds to the canary, 10 of them failed: with min_feeds 100
        neither can judge its own half. Each publishes its counts to the store; the second to judge sees 120 feeds
        and 20 failures summed over both, and rolls the canary back; the first then finds it gone. The registry's
        history holds one rollback, and ListModels' totals add up both replicas."""
        store, _ = self._canary_routing(tmp_path)
        replicas = [GatewayRouting(open_store(tmp_path / "catalog.db"), OnlineMetrics()) for _ in range(2)]
        for replica in replicas:
            replica.metrics.trial = {"ranker-mlp/1": _tally(1000, 1000), "ranker-mlp/2": _tally(50, 50, errors=10)}
            replica.metrics.totals = dict(replica.metrics.trial)
            assert replica.family is not None and replica.guardrails.check(replica.family) is None  # alone: too few
        first, second = replicas
        assert first.tick() is None  # its own counts only, so far
        found = second.tick()
        assert found is not None and found.rule == "max_error_rate" and "20 of 120 feeds failed" in str(found)
        first._published = 0.0  # its next tick publishes and judges again
        assert first.tick() is None and first.family is not None and first.family.canary is None
        history = store.registry().family("ranker-mlp").versions["2"].history
        assert sum("breached" in str(change) for change in history) == 1
        assert len(second.guardrails.rollbacks) == 1 and not first.guardrails.rollbacks
        listed = asyncio.run(first.describe("ranker-mlp"))
        online = {v.version: v.online for v in listed.families[0].versions}
        assert online["2"].feeds == 100 and online["2"].errors == 20 and online["1"].feeds == 2000

    def test_listing_the_models_does_not_hold_the_guardrails_back(self, tmp_path) -> None:
        """ListModels publishes the replica's counts as a tick does; a listing just before a tick must not make that
        tick skip its judgement (an operator polling `feedserve models list` kept a bad canary serving)."""
        store, _ = self._canary_routing(tmp_path)
        routing = GatewayRouting(store, OnlineMetrics())
        routing.metrics.trial = {"ranker-mlp/1": _tally(2000, 2000), "ranker-mlp/2": _tally(100, 100, errors=10)}
        asyncio.run(routing.describe("ranker-mlp"))
        found = routing.tick()
        assert found is not None and found.rule == "max_error_rate"

    @staticmethod
    def _canary_routing(directory: Path) -> tuple[Store, OnlineMetrics]:
        directory.mkdir(parents=True, exist_ok=True)
        store = open_store(directory / "catalog.db")

        def setup(registry) -> None:
            family = registry.families.setdefault("ranker-mlp", Family("ranker-mlp"))
            family.stage(version_dir(directory, "1"), 0, 0.0)
            family.stage(version_dir(directory, "2"), 0, 0.0)
            family.canary_version("2", 0.1, 1.0)

        store.change_registry(setup)
        return store, OnlineMetrics()
