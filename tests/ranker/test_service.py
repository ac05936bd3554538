"""Ranker over a real gRPC server on a real store: retrieval from several sources, model scores, diversity, the
change feed (new, deleted, hidden items), feed options, read-your-writes, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from catalog import Item, open_store
from catalog.encoding import ContentEncoder
from engines.sentence import SentenceEncoder, ensure_encoder
from feedserve.v1 import common_pb2, ranker_pb2, ranker_pb2_grpc
from mesh.methods import HeapOutputs
from mesh.tensors import from_tensor, to_tensor
from ranker.diversity import category_shares, diversified_top_k
from ranker.features import FeatureSpace, ItemCodes, RecentItems, assemble
from ranker.history import History
from ranker.items import ItemTable
from ranker.retrieval import Retriever
from ranker.service import Ranker
from ranker.transitions import FILE as TRANSITIONS_FILE
from ranker.transitions import Transitions
from tests.stack import CLOCK, start_ranker


@asynccontextmanager
async def _ranker(catalog, manifest, store: str | None = None, **options) -> AsyncIterator[tuple[object, Ranker]]:
    """A Ranker on a real gRPC server, `options` set on its core as python -m ranker's options set them: its stub
    and its core."""
    server, core = await start_ranker(catalog, manifest, store)
    for name, value in options.items():
        setattr(core, name, value)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield ranker_pb2_grpc.RankerStub(channel), core
    finally:
        await server.stop(0)
        core.close()


async def _with_ranker(catalog, manifest, body, store: str | None = None, **options) -> None:
    async with _ranker(catalog, manifest, store, **options) as (stub, _):
        await body(stub)


class TestRank:
    def test_rank_returns_k_items_scored_by_the_model(self, catalog, manifest, run) -> None:
        """A known user gets k items from retrieval, the model's scores (no blend) in (0, 1), in descending order,
        with hops."""

        async def body(stub) -> None:
            user = to_tensor(catalog.vector(1))
            reply = await stub.Rank(ranker_pb2.RankRequest(user_id=1, user_vector=user, k=20))
            assert len(reply.items) == 20 and not reply.cold_start
            scores = [item.score for item in reply.items]
            assert all(0 < s < 1 for s in scores)
            assert reply.candidates_considered > 1000
            assert [h.stage for h in reply.hops] == ["catalog_wait", "retrieval", "features", "queued", "model"]
            assert reply.model_name == manifest.name and reply.model_version == manifest.version
            assert all(item.sources and item.title and item.external_id for item in reply.items)
            assert reply.catalog_sequence > 0 and not reply.behind

        run(_with_ranker(catalog, manifest, body, follow_weight=0.0))

    def test_served_scores_equal_the_naive_model_on_the_same_features(self, catalog, manifest, run) -> None:
        """The decomposed serving path scores given candidates exactly as the naive graph does on the
        assembled 4,736-dim features (relative error <= 3e-5, float32's floor at this model's small scores)."""
        import onnxruntime as ort

        ids = np.array([3, 50, 400, 4999], np.int64)
        user = catalog.vector(3)
        space = FeatureSpace(catalog.schema, catalog.dim)
        context = space.context_features(np.array([9]), np.array([2]), [{"device": "phone"}], "feed")[0]

        async def body(stub) -> None:
            reply = await stub.Rank(ranker_pb2.RankRequest(
                user_id=3, user_vector=to_tensor(user), k=4, candidates=to_tensor(ids),
                context_features=to_tensor(context), return_all_scores=True))
            got = from_tensor(reply.scores, "scores")
            store = open_store(catalog.url)
            items = ItemTable(space)
            items.apply(store.changes(0, limit=10**6)[0])
            who, what, kinds, stamps = store.event_rows(0, store.sequence())
            items.add_popularity(what)
            history = History()
            history.add(who, what, kinds, stamps)
            mine = history.of(3)
            assert mine is not None and len(mine.recent)  # the history columns are exercised
            recent = RecentItems(items.vectors[mine.rows()], items.content[mine.rows()], mine.events)
            attributes = dict(store.users_changed(0, store.sequence()))[3]
            cross = space.cross_features(user[None, :], space.user_crosses(attributes), items.vectors[ids - 1],
                                         items.category[ids - 1], np.zeros(4, np.uint8),
                                         CLOCK - items.published[ids - 1], items.popularity[ids - 1],
                                         item_content=items.content[ids - 1], recent=recent, trend=items.trend[ids - 1],
                                         transition=Transitions.load(manifest.directory / TRANSITIONS_FILE).scores(
                                             mine.rows(), ids - 1))
            features = assemble(space.user_features(user[None, :], [attributes]), items.features(ids - 1),
                                context[None, :], cross)
            naive = ort.InferenceSession(str(manifest.path("naive")), providers=["CPUExecutionProvider"])
            weights = np.array([manifest.extra["head_weights"][h] for h in ("click", "like", "dwell", "share")], np.float32)
            expected = naive.run(["scores"], {"features": features, "head_weights": weights})[0]
            # float32 sums over 4,736 columns in two orders: with scores near 0.005 (this fixture's model), a few parts
            # in 100,000 is the rounding floor (one full run measured 1.17e-5)
            assert np.linalg.norm(got - expected) / np.linalg.norm(expected) <= 3e-5

        run(_with_ranker(catalog, manifest, body, follow_weight=0.0))  # the model's scores, before any blend

    def test_missing_user_vector_ranks_from_the_models_cold_start_vector(self, catalog, manifest, run) -> None:
        """No vector: the feed is the one the model's cold-start vector (the mean learned user) gets, flagged cold
        start (popularity's part in a new user's feed set aside)."""
        cold = np.asarray(manifest.extra["cold_start"], np.float32)

        async def body(stub) -> None:
            reply = await stub.Rank(ranker_pb2.RankRequest(k=10))
            assert reply.cold_start and len(reply.items) == 10
            explicit = await stub.Rank(ranker_pb2.RankRequest(k=10, user_vector=to_tensor(cold)))
            assert not explicit.cold_start
            assert [i.item_id for i in reply.items] == [i.item_id for i in explicit.items]

        run(_with_ranker(catalog, manifest, body, cold_popularity=0.0))

    def test_a_new_users_feed_leans_on_popularity_and_a_known_users_does_not(self, catalog, manifest, run) -> None:
        """With popularity's weight alone (infinite), a new user (no vector, no history) is shown the candidates in
        order of popularity; a known user's feed is the model's order whatever the weight."""

        async def body() -> None:
            async with _ranker(catalog, manifest, cold_popularity=float("inf"), follow_weight=0.0,
                               diversify=False) as (stub, core):
                cold = await stub.Rank(ranker_pb2.RankRequest(k=20))
                counts = [float(core.items.popularity[i.item_id - 1]) for i in cold.items]
                assert cold.cold_start and counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
                known = ranker_pb2.RankRequest(user_id=1, user_vector=to_tensor(catalog.vector(1)), k=20)
                scores = [i.score for i in (await stub.Rank(known)).items]
                assert scores == sorted(scores, reverse=True) and all(0 < score < 1 for score in scores)

        run(body())

    def test_a_known_users_feed_leads_with_what_follows_their_latest_item(self, catalog, manifest, run) -> None:
        """With the follow weight alone (infinite), a user with a history is first shown the candidate that followed
        their newest positive item in others' sequences, even one the model (weight 0) put last of twenty."""

        async def body() -> None:
            async with _ranker(catalog, manifest, follow_weight=float("inf"), diversify=False) as (stub, core):
                user = next(u for u in range(1, 10_000) if core.history.of(u) is not None)
                latest = int(core.history.of(user).rows()[0])
                ask = ranker_pb2.RankRequest(user_id=user, user_vector=to_tensor(catalog.vector(user)), k=20)
                core.follow_weight = 0.0
                models_order = [i.item_id for i in (await stub.Rank(ask)).items]
                target = models_order[-1] - 1  # the model's twentieth
                indptr = np.zeros(core.items.size + 1, np.int64)
                indptr[latest + 1:] = 1  # one follower, of the user's newest item
                core.resident.primary.transitions = Transitions(indptr, np.array([target], np.int32),
                                                                np.array([1.0], np.float32))
                core.follow_weight = float("inf")
                assert (await stub.Rank(ask)).items[0].item_id == target + 1

        run(body())

    def test_the_category_cap_follows_the_users_latest_items(self, catalog, manifest, run) -> None:
        """A user whose ten latest items share the category their scores favour most gets more than a quarter of
        the feed from it: exactly the calibrated cap over every candidate's category and popularity (ranker/diversity.py)."""

        async def body() -> None:
            async with _ranker(catalog, manifest, cascade_keep=0) as (_, core):
                user = next(u for u in range(1, 10_000) if core.history.of(u) is not None)
                ask = ranker_pb2.RankRequest(user_id=user, k=20, return_all_scores=True)
                tensors = {"user_vector": catalog.vector(user)}
                outputs = HeapOutputs()
                core.rank(ask, tensors, outputs)
                ids, scores = outputs.arrays["candidate_ids"], outputs.arrays["scores"]
                categories = core.items.category[ids - 1]
                best = np.argsort(-scores, kind="stable")[:20]
                favoured, count = np.unique(categories[best], return_counts=True)
                favoured = int(favoured[np.argmax(count)])
                assert count.max() > 5, "the fixture's best twenty should lean to one category"
                core.history.of(user).recent = np.flatnonzero(core.items.category[:core.items.size] == favoured)[:10].tolist()
                outputs = HeapOutputs()  # the new history moves the scores too
                reply = core.rank(ask, tensors, outputs)
                ids, scores = outputs.arrays["candidate_ids"], outputs.arrays["scores"]
                categories = core.items.category[ids - 1]
                recent = core.items.category[core.history.of(user).rows()]
                shares = category_shares(categories, core.items.popularity[ids - 1], recent)
                expected = ids[diversified_top_k(scores, categories, 20, shares)]
                assert [i.item_id for i in reply.items] == expected.tolist()
                assert sum(core.items.category[i.item_id - 1] == favoured for i in reply.items) > 5

        run(body())

    def test_every_source_contributes_for_a_known_user(self, catalog, manifest, run) -> None:
        """Interest, cluster, fresh and popular candidates all reach the scored set, each tagged with its source."""

        async def body(stub) -> None:
            reply = await stub.Rank(ranker_pb2.RankRequest(user_id=1, user_vector=to_tensor(catalog.vector(1)), k=500))
            assert {s for item in reply.items for s in item.sources} == {"interest", "cluster", "fresh", "popular"}
            assert 2000 <= reply.candidates_considered <= 2400

        run(_with_ranker(catalog, manifest, body))

    @pytest.mark.parametrize(
        "request_fields, field",
        [
            ({"k": 0}, "k"),
            ({"k": 501}, "k"),
            ({"k": 5, "candidate_count": 10**6}, "candidate_count"),
            ({"k": 5, "user_vector": to_tensor(np.zeros(3, np.float32))}, "user_vector.shape"),
            ({"k": 5, "user_vector": to_tensor(np.full(384, np.nan, np.float32))}, "user_vector"),
            ({"k": 5, "candidates": to_tensor(np.array([0], np.int64))}, "candidates"),
            ({"k": 5, "context_features": to_tensor(np.full(512, np.inf, np.float32))}, "context_features"),
            ({"k": 5, "context_features": to_tensor(np.zeros(4736, np.float32))}, "context_features.shape"),
            ({"k": 5, "head_weights": {"joy": 1.0}}, "head_weights.joy"),
            ({"k": 5, "context": common_pb2.RequestContext(fields={"weather": "rain"})}, "context.fields.weather"),
            ({"k": 5, "context": common_pb2.RequestContext(fields={"local_hour": "noon"})}, "context.fields.local_hour"),
        ],
    )
    def test_bad_rank_request_names_the_field(self, catalog, manifest, run, request_fields, field) -> None:
        """Every malformed field gets INVALID_ARGUMENT naming it."""

        async def body(stub) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Rank(ranker_pb2.RankRequest(**request_fields))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details().startswith(field)

        run(_with_ranker(catalog, manifest, body))


@pytest.fixture(scope="module")
def ranker(catalog, manifest):
    """One ranker over the shared catalog, not following it (nothing writes)."""
    core = Ranker(open_store(catalog.url), catalog.schema, manifest, follow=False)
    yield core
    core.close()


class TestFeedOptions:
    def _rank(self, ranker: Ranker, catalog, user: int = 1, **fields) -> ranker_pb2.RankResponse:
        tensors = {"user_vector": catalog.vector(user)}
        if "exclude" in fields:
            tensors["exclude"] = fields.pop("exclude")
        return ranker.rank(ranker_pb2.RankRequest(user_id=user, k=100, **fields), tensors, HeapOutputs())

    def test_seen_items_are_left_out_unless_asked_for(self, ranker, catalog) -> None:
        """Items the user interacted with never come back by default; include_seen lets them."""
        seen = ranker.seen[1]
        assert not seen & {i.item_id for i in self._rank(ranker, catalog).items}
        assert seen & {i.item_id for i in self._rank(ranker, catalog, include_seen=True, candidate_count=5000).items}

    def test_excluded_ids_and_label_filters_hold(self, ranker, catalog) -> None:
        """An exclude list, categories in and out, and a publish-time floor all hold on every returned item."""
        first = self._rank(ranker, catalog)
        banned = np.array([i.item_id for i in first.items[:10]], np.int64)
        again = self._rank(ranker, catalog, exclude=banned)
        assert not set(banned.tolist()) & {i.item_id for i in again.items}
        only = self._rank(ranker, catalog, include_labels=["music", "film"])
        assert only.items and {i.category for i in only.items} <= {"music", "film"}
        without = self._rank(ranker, catalog, exclude_labels=["music"])
        assert "music" not in {i.category for i in without.items}
        floor = int(np.median(ranker.items.published[:len(ranker.items)]))
        recent = self._rank(ranker, catalog, published_after=floor)
        assert all(ranker.items.published[i.item_id - 1] >= floor for i in recent.items)

    def test_objective_weights_change_the_order(self, ranker, catalog) -> None:
        """Weighting only the share head orders the same candidates by that head alone."""
        ids = np.arange(1, 301, dtype=np.int64)
        request = ranker_pb2.RankRequest(user_id=1, k=300, head_weights={"click": 0, "like": 0, "dwell": 0, "share": 1},
                                         return_all_scores=True)
        reply = ranker.rank(request, {"user_vector": catalog.vector(1), "candidates": ids}, HeapOutputs())
        shares = [i.score for i in reply.items]
        assert shares == sorted(shares, reverse=True) or len({i.category for i in reply.items}) > 1


class TestFollowingTheStore:
    def test_new_deleted_and_hidden_items_follow_the_change_feed(self, catalog, manifest, encoder_home: Path,
                                                               tmp_path: Path) -> None:
        """A new item is retrievable once encoded; a deleted or hidden one is never returned again, even by id,
        and a ranker started afterwards (a restart) agrees."""
        url = catalog.copy(tmp_path)
        store = open_store(url)
        ranker = Ranker(store, catalog.schema, manifest, follow=False, cascade_keep=0)  # every retrieved id comes back
        encoder = SentenceEncoder(ensure_encoder(encoder_home))
        store.upsert_items([Item("new-1", "Volcanoes of Iceland", "Lava fields and geysers", ["travel"])])
        ContentEncoder(open_store(url), encoder.encode_batch).drain()
        ranker.follower.poll()
        new_id = int(store.resolve(1, ["new-1"])[0])
        placed = ranker.items.vectors[new_id - 1]  # where its content put it in the learned space
        probe = placed / np.linalg.norm(placed)  # a user whose taste is exactly there
        out = HeapOutputs()
        found = ranker.rank(ranker_pb2.RankRequest(user_id=9_999, k=50, return_all_scores=True), {"user_vector": probe}, out)
        assert new_id in set(out.arrays["candidate_ids"].tolist())  # retrieved (by content) before anyone touched it
        victim, hidden = found.items[1].external_id, found.items[2].external_id
        store.delete_items(["new-1", victim])
        record = next(i for i in store.changes(0, limit=10**6)[0] if i.external_id == hidden)
        store.upsert_items([Item(hidden, record.title, record.text, record.categories, hidden=True)])
        ranker.follower.poll()
        gone = {int(x) for x in store.resolve(1, ["new-1", victim, hidden])}
        for core in (ranker, Ranker(store, catalog.schema, manifest, follow=False)):
            again = core.rank(ranker_pb2.RankRequest(user_id=9_999, k=100), {"user_vector": probe}, HeapOutputs())
            assert not gone & {i.item_id for i in again.items}
            by_id = core.rank(ranker_pb2.RankRequest(user_id=9_999, k=3), {"candidates": np.array(sorted(gone), np.int64)},
                              HeapOutputs())
            assert len(by_id.items) == 0
            core.close()

    def test_min_sequence_waits_for_the_catalog_or_says_it_is_behind(self, catalog, manifest, tmp_path: Path) -> None:
        """A request asking for a sequence the ranker has not applied waits (up to its budget), then says `behind`;
        once applied, the same request is answered in full."""
        url = catalog.copy(tmp_path)
        store = open_store(url)
        ranker = Ranker(store, catalog.schema, manifest, follow=False)
        seq = store.upsert_items([Item("late", "Late arrival")])
        request = ranker_pb2.RankRequest(k=5, min_sequence=seq, min_sequence_wait_ms=1)
        assert ranker.rank(request, {}, HeapOutputs()).behind
        ranker.follower.poll()
        reply = ranker.rank(request, {}, HeapOutputs())
        assert not reply.behind and reply.catalog_sequence >= seq
        ranker.close()

    def test_two_rankers_on_one_store_converge(self, catalog, manifest, tmp_path: Path) -> None:
        """Rankers that follow one store end with the same servable items after the same changes."""
        url = catalog.copy(tmp_path)
        store = open_store(url)
        first, second = (Ranker(open_store(url), catalog.schema, manifest, follow=False) for _ in range(2))
        store.delete_items([str(n) for n in range(1, 40)])
        first.follower.poll()
        second.follower.poll()
        assert first.follower.applied == second.follower.applied == store.sequence()
        np.testing.assert_array_equal(first.items.servable[:len(first.items)], second.items.servable[:len(second.items)])
        assert first.retriever.count == second.retriever.count == int(first.items.servable.sum())
        first.close()
        second.close()


class TestRetrieval:
    def _table(self, catalog) -> ItemTable:
        items = ItemTable(FeatureSpace(catalog.schema, catalog.dim))
        items.apply(open_store(catalog.url).changes(0, limit=10**6)[0])
        return items

    def test_interest_source_finds_most_of_the_exact_top_items(self, catalog) -> None:
        """The ANN source recalls at least 70% of the 50 items with the highest inner product."""
        items = self._table(catalog)
        retriever = Retriever(items)
        retriever.add(np.flatnonzero(items.servable[:len(items)]))
        user = catalog.vector(7)
        found = retriever.retrieve(user, 1000)
        best = set((np.argsort(-(items.vectors[:len(items)] @ user))[:50] + 1).tolist())
        interest = set(found.ids[(found.sources & 1) == 1].tolist())
        assert len(best & interest) >= 35
        assert len(np.unique(found.ids)) == len(found.ids)

    def test_the_index_holds_only_the_coordinates_items_use_and_widens_for_an_item_that_uses_more(self, catalog) -> None:
        """A learned space's items use the leading coordinates only (their count rounded up to 16 is what the index
        holds) and it finds exactly the flat inner-product top 20. An item that uses coordinate 300 widens it, and a
        query along that coordinate finds the item first."""
        items = self._table(catalog)
        rows = np.flatnonzero(items.servable[:len(items)])
        used = int(np.flatnonzero(np.any(items.vectors[rows] != 0, axis=0))[-1]) + 1
        assert used < 300
        retriever = Retriever(items)
        retriever.add(rows)
        assert retriever._index.width == -(-used // 16) * 16 and retriever.kind == "flat"
        user = catalog.vector(5)
        found = retriever.retrieve(user, 100)
        exact = rows[np.argsort(-(items.vectors[rows] @ user), kind="stable")[:20]] + 1
        interest = found.ids[(found.sources & 1) == 1]
        assert set(exact.tolist()) <= set(interest.tolist())
        wide = rows[:1]
        items.vectors[wide, 300] = 50.0
        retriever.add(wide)
        assert retriever._index.width == 304 and retriever.count == len(rows)
        probe = np.zeros(items.vectors.shape[1], np.float32)
        probe[300] = 1.0
        found = retriever.retrieve(probe, 50)
        best = found.ids[np.argmax(found.scores)]
        assert best == wide[0] + 1

    def test_an_ivf_rebuild_keeps_changes_made_while_it_trained(self, catalog) -> None:
        """A background rebuild (IVF at this size) swaps in with every add and remove made meanwhile applied."""
        import threading

        from ranker import retrieval

        items = self._table(catalog)
        retriever = Retriever(items)
        rows = np.flatnonzero(items.servable[:len(items)])
        retriever.add(rows)
        lock = threading.Lock()
        old, retrieval.FLAT_BELOW = retrieval.FLAT_BELOW, 1_000
        try:
            retriever._during_rebuild = []  # as rebuild() does under the lock before training
            items.servable[rows[:20]] = False  # as ItemTable.apply marks them before the ranker removes them
            retriever.remove(rows[:10])
            changes = retriever._during_rebuild
            retriever.rebuild(lock)
            assert retriever.kind == "ivf" and retriever.rebuilds == 1
            assert changes and retriever.count == len(rows) - 20  # the snapshot skips unservable rows
            retriever.remove(rows[10:20])
            assert retriever.count == len(rows) - 20
            found = retriever.retrieve(catalog.vector(2), 500)
            assert not set((rows[10:20] + 1).tolist()) & set(found.ids.tolist())
        finally:
            retrieval.FLAT_BELOW = old

    def test_item_codes_come_from_the_schema(self, catalog) -> None:
        """An item's categories, tags and declared attributes land in hashed columns; undeclared ones do not."""
        space = FeatureSpace(catalog.schema, catalog.dim)
        codes = space.item_codes(["music"], ["live"], {"author": "a1", "unknown": "x"})
        assert isinstance(codes, ItemCodes) and (codes.columns >= 0).sum() == 3
        assert codes.category == space.item_codes(["music"], [], {}).category


class TestResume:
    def test_a_restarted_ranker_resumes_from_its_sequence_without_a_reload(self, catalog, manifest, tmp_path: Path,
                                                                         monkeypatch) -> None:
        """close() saves what the ranker derived; a new ranker on the same state reads the store only after that
        sequence, applies what changed while it was down, and ranks exactly as a ranker loaded from scratch."""
        url = catalog.copy(tmp_path / "store")
        state = tmp_path / "state"
        first = Ranker(open_store(url), catalog.schema, manifest, follow=False, state_dir=state, clock=lambda: CLOCK)
        request = ranker_pb2.RankRequest(user_id=2, k=30)
        before = first.rank(request, {"user_vector": catalog.vector(2)}, HeapOutputs())
        saved_at = first.follower.applied
        first.close()
        store = open_store(url)
        store.delete_items([before.items[0].external_id])
        reads: list[int] = []
        changes = type(store).changes

        def counted(self, after, limit=10_000):
            reads.append(after)
            return changes(self, after, limit)

        monkeypatch.setattr(type(store), "changes", counted)
        second = Ranker(store, catalog.schema, manifest, follow=False, state_dir=state, clock=lambda: CLOCK)
        assert second.resumed_from == saved_at and min(reads) == saved_at  # nothing before it was read again
        monkeypatch.undo()
        after = second.rank(request, {"user_vector": catalog.vector(2)}, HeapOutputs())
        scratch = Ranker(open_store(url), catalog.schema, manifest, follow=False, clock=lambda: CLOCK)
        reloaded = scratch.rank(request, {"user_vector": catalog.vector(2)}, HeapOutputs())
        assert before.items[0].item_id not in {i.item_id for i in after.items}
        assert [(i.item_id, round(i.score, 5)) for i in after.items] == [(i.item_id, round(i.score, 5)) for i in reloaded.items]
        second.close()
        scratch.close()

    def test_a_state_for_another_model_is_ignored(self, catalog, manifest, tmp_path: Path) -> None:
        """Saved item terms belong to one model version: with another, the ranker reloads instead."""
        from ranker.state import load_state

        url = catalog.copy(tmp_path / "store")
        ranker = Ranker(open_store(url), catalog.schema, manifest, follow=False, state_dir=tmp_path / "state")
        ranker.close()
        assert load_state(tmp_path / "state", ItemTable(ranker.space), "ranker-mlp/999", "simulator") is None
        assert load_state(tmp_path / "state", ItemTable(ranker.space), ranker._model_key, "simulator") is not None
