"""Feed options through the whole stack: users by your id, pagination cursors, read-your-writes, exclusions, filters."""

from __future__ import annotations

import grpc
import numpy as np

from catalog import Item, open_store
from catalog.encoding import ContentEncoder
from feedserve.v1 import catalog_pb2, common_pb2, gateway_pb2, gateway_pb2_grpc, paramserver_pb2
from mesh.tensors import to_tensor
from tests.stack import grpc_status as _status
from tests.stack import running_stack, start_gateway


class TestPages:
    def test_pages_continue_one_ranking_without_repeats(self, catalog, manifest, tmp_path, run) -> None:
        """Three pages of 20 through cursors are the first 60 of one ranking: no item twice, same order."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                first = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=20), timeout=10)
                second = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=20, cursor=first.next_cursor))
                third = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=20, cursor=second.next_cursor))
                ids = [i.item_id for page in (first, second, third) for i in page.items]
                assert len(ids) == 60 and len(set(ids)) == 60
                deep = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=60, include_seen=False))
                assert [i.item_id for i in deep.items] == ids  # the same ranking, cut into pages

        run(body())

    def test_a_forged_cursor_or_one_for_another_user_is_invalid(self, catalog, manifest, tmp_path, run) -> None:
        """A forged cursor and one used by another user get INVALID_ARGUMENT naming `cursor`; the refused attempt
        leaves the cursor working for its own user."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                code, details = await _status(stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, cursor="forged")))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("cursor:")
                first = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=10), timeout=10)
                code, details = await _status(stack.gateway.Feed(
                    gateway_pb2.FeedRequest(user_id=5, cursor=first.next_cursor)))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "another user" in details
                second = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=10, cursor=first.next_cursor))
                assert len(second.items) == 10

        run(body())

    def test_another_gateway_on_the_same_store_continues_a_cursor(self, catalog, manifest, tmp_path, run) -> None:
        """A second gateway replica (its own process state, the same store) continues the first one's cursor with
        the next page of the same ranking, and its own next cursor goes back to the first replica."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                other, clients, _ = await start_gateway(f"127.0.0.1:{stack.ports['paramserver']}",
                                                        f"127.0.0.1:{stack.ports['ranker']}", store=open_store(stack.store))
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{other.port}")
                try:
                    replica = gateway_pb2_grpc.GatewayStub(channel)
                    first = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=20), timeout=10)
                    second = await replica.Feed(gateway_pb2.FeedRequest(user_id=4, k=20, cursor=first.next_cursor))
                    third = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=20, cursor=second.next_cursor))
                    deep = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=60, include_seen=False))
                    assert [i.item_id for page in (first, second, third) for i in page.items] == \
                        [i.item_id for i in deep.items]
                finally:
                    await channel.close()
                    for client in clients:
                        await client.close()
                    await other.stop(0)

        run(body())

    def test_a_deleted_users_cursor_is_refused(self, catalog, manifest, tmp_path, run) -> None:
        """Once a user is deleted, the cursor of a feed made for them before is INVALID_ARGUMENT, saying the user
        was deleted (the store's tombstone, which every replica reads)."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                first = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=10), timeout=10)
                await stack.catalog.DeleteUser(catalog_pb2.DeleteUserRequest(id="4"), timeout=10)
                code, details = await _status(stack.gateway.Feed(
                    gateway_pb2.FeedRequest(user_id=4, cursor=first.next_cursor)))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "deleted" in details

        run(body())

    def test_an_expired_cursor_is_invalid(self, catalog, manifest, tmp_path, run) -> None:
        """Past its lifetime a cursor is refused, saying it expired."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                stack.service.pages.ttl_s = 0.0
                first = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=10), timeout=10)
                code, details = await _status(stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, cursor=first.next_cursor)))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "expired" in details

        run(body())


class TestCatalogOptions:
    def test_users_and_exclusions_by_your_ids(self, catalog, manifest, tmp_path, run) -> None:
        """`user` names the user by your id (an unknown one gets a cold-start feed); `exclude` drops your item ids."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                by_number = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=7, k=10), timeout=10)
                by_yours = await stack.gateway.Feed(gateway_pb2.FeedRequest(user="7", k=10), timeout=10)
                assert [i.id for i in by_yours.items] == [i.id for i in by_number.items]
                stranger = await stack.gateway.Feed(gateway_pb2.FeedRequest(user="nobody-yet", k=10), timeout=10)
                assert stranger.cold_start and len(stranger.items) == 10
                banned = [i.id for i in by_yours.items[:5]]
                fewer = await stack.gateway.Feed(gateway_pb2.FeedRequest(user="7", k=10, exclude=banned), timeout=10)
                assert not set(banned) & {i.id for i in fewer.items}
                code, details = await _status(stack.gateway.Feed(gateway_pb2.FeedRequest(user="7", user_id=7)))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("user:")

        run(body())

    def test_min_sequence_reflects_a_write_or_says_why_not(self, catalog, manifest, tmp_path, run) -> None:
        """After an acknowledged delete, a feed with its sequence never shows the item; a sequence the ranker has
        not reached comes back degraded, naming the catalog."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                before = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=9, k=20), timeout=10)
                victim = before.items[0].id
                ack = await stack.catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(ids=[victim]), timeout=10)
                after = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=9, k=20, min_sequence=ack.sequence),
                                                 timeout=10)
                assert victim not in {i.id for i in after.items} and not after.degraded
                assert after.catalog_sequence >= ack.sequence
                ahead = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=9, k=20, min_sequence=ack.sequence + 10**6),
                                                 timeout=1)
                assert ahead.degraded and ahead.degraded_reason.startswith("catalog:")

        run(body())

    def test_filters_weights_and_context_fields_reach_the_ranker(self, catalog, manifest, tmp_path, run) -> None:
        """Label filters hold; unknown objectives and undeclared context fields name their field."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                music = await stack.gateway.Feed(gateway_pb2.FeedRequest(
                    user_id=3, k=10, include_labels=["music"], objective_weights={"share": 1.0},
                    context=common_pb2.RequestContext(fields={"device": "tv", "local_hour": "21"})), timeout=10)
                assert music.items and {i.category for i in music.items} == {"music"}
                code, details = await _status(stack.gateway.Feed(gateway_pb2.FeedRequest(
                    user_id=3, objective_weights={"joy": 1.0})))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("objective_weights.joy")
                code, details = await _status(stack.gateway.Feed(gateway_pb2.FeedRequest(
                    user_id=3, context=common_pb2.RequestContext(fields={"weather": "rain"}))))
                assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("context.fields.weather")

        run(body())

    def test_an_upserted_item_is_retrievable_by_the_next_feed(self, catalog, manifest, tmp_path, run,
                                                             content_encoder) -> None:
        """A new item, once encoded, is retrieved for a user whose vector is its content (no one has touched it):
        filtered on its own category, the feed is exactly that item."""

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path) as stack:
                store = open_store(stack.store)
                store.upsert_items([Item("fresh-1", "Northern lights over Tromso", "Aurora photography", ["aurora"])])
                ContentEncoder(store, content_encoder.encode_batch).drain()
                stack.caught_up(store.sequence())
                vector = next(i.vector for i in store.changes(0, limit=10**6)[0] if i.external_id == "fresh-1")
                await stack.paramserver.Upsert(paramserver_pb2.UpsertRequest(
                    table=paramserver_pb2.TABLE_USER, keys=to_tensor(np.array([77_777], np.int64)),
                    values=to_tensor(vector[None, :])))
                feed = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=77_777, k=10, include_labels=["aurora"]),
                                                timeout=10)
                assert [i.id for i in feed.items] == ["fresh-1"]

        run(body())
