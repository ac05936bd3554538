"""Real-time learning through the public API, on the learned space: guardrails hold a burst back and the
acknowledgement says so; DeleteUser unlearns the user. (A like moving the feed: tests/ranker/test_learning.py, on
real data, where the learned space means something.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catalog import ITEM, USER, open_store
from feedserve.v1 import catalog_pb2, common_pb2, gateway_pb2, paramserver_pb2
from mesh.tensors import from_tensor, to_tensor
from paramserver.guardrails import Guardrails
from tests.stack import running_stack

LIKE = common_pb2.EVENT_TYPE_LIKE


class TestGuardrails:
    def test_a_burst_is_held_back_and_the_interact_ack_says_so(self, catalog, manifest, tmp_path: Path, run) -> None:
        """With a cap of 3 moves a minute, the fourth Interact of a burst is acknowledged as logged (its sequence)
        but held back by GUARDRAIL_RATE: applied is false and the vector did not move."""
        store_url = catalog.copy(tmp_path / "store")
        external = open_store(store_url).external_ids()
        user = int(catalog.user_ids[5])
        items = [external[1][i] for i in (1, 2, 3, 4)]

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, store=store_url) as stack:
                stack.paramserver_core.guardrails = Guardrails(3, 0)
                acks = [await stack.gateway.Interact(gateway_pb2.InteractRequest(
                    user=external[0][user], item=item, event=LIKE), timeout=10) for item in items]
                assert [a.held_back for a in acks] == [common_pb2.GUARDRAIL_NONE] * 3 + [common_pb2.GUARDRAIL_RATE]
                assert [a.applied for a in acks] == [True, True, True, False]
                assert all(a.sequence > 0 for a in acks)  # every event is logged
                batch = await stack.catalog.InteractBatch(catalog_pb2.InteractBatchRequest(
                    events=[catalog_pb2.CatalogEvent(user=external[0][user], item=items[0], event=LIKE)], drift=True),
                    timeout=10)
                assert batch.rows == 1 and batch.held_back == 1

        run(body())


class TestUnlearning:
    def test_delete_user_leaves_nothing_in_tables_caches_or_event_store(self, catalog, manifest, tmp_path: Path, run) -> None:
        """A user with a learned vector, events and online moves is deleted: no learned vector in any space, no
        events, no id, no paramserver row or guardrail state, no cached feed, nothing in the ranker's memory."""
        store_url = catalog.copy(tmp_path / "store")
        store = open_store(store_url)
        users, items = store.external_ids()
        learned, _ = store.learned_users(store.active_space())
        user = int(learned[7])
        name = users[user]

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, store=store_url) as stack:
                ack = await stack.gateway.Interact(gateway_pb2.InteractRequest(user=name, item=items[3], event=LIKE),
                                                   timeout=10)
                stack.caught_up(ack.sequence)
                await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=user), timeout=10)
                assert stack.service.cache.get(user, 20) is not None and user in stack.ranker_core.seen
                deleted = await stack.catalog.DeleteUser(catalog_pb2.DeleteUserRequest(id=name), timeout=10)
                stack.caught_up(deleted.sequence)
                found = await stack.paramserver.Lookup(paramserver_pb2.LookupRequest(
                    table=paramserver_pb2.TABLE_USER, keys=to_tensor(np.array([user], np.int64))))
                assert not from_tensor(found.found, "found")[0]
                assert not stack.paramserver_core.guardrails.remembers(user)
                assert stack.service.cache.get(user, 20) is None
                assert user not in stack.ranker_core.seen and user not in stack.ranker_core.user_attributes
                assert stack.ranker_core.history.of(user) is None

        run(body())
        assert store.resolve(USER, [name]).tolist() == [0]
        assert user not in store.learned_users(store.active_space())[0]
        assert user not in store.events()["user"]
        assert user not in dict(store.users_changed(0, store.sequence()))
        assert store.resolve(ITEM, [items[3]]).tolist() == [3]

