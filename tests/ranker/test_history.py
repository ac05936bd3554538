"""Users' recent history and items' trend, as serving follows them and training rebuilds them: the latest positive
items newest first, nothing from an example's own moment or later, training's per-row history columns and trend equal
to serving's, and the example builder's ranks equal to a full sort's."""

from __future__ import annotations

import numpy as np

from learning.examples import pool_ranks, stable_ranks
from ranker.features import FeatureSpace, RecentItems
from ranker.history import RECENT, History, snapshots
from ranker.items import TREND_HALF_LIVES, ItemTable, trend_before
from ranker.transitions import Transitions

LIKE, CLICK, SKIP = 3, 2, 6


class TestHistory:
    def test_keeps_the_latest_positive_items_newest_first(self) -> None:
        """Skips count as activity but are not wanted items; a re-liked item moves to the front; at most RECENT."""
        history = History()
        items = np.r_[np.arange(1, RECENT + 4), 3]  # RECENT + 3 items, then item 3 again
        kinds = np.full(len(items), LIKE)
        kinds[1] = SKIP  # item 2
        history.add(np.full(len(items), 9), items, kinds, np.arange(len(items)) * 10)
        entry = history.of(9)
        assert entry is not None and entry.events == len(items)
        # item 3 (row 2) again last; then the others newest first; item 2 skipped; the oldest fall off
        assert entry.rows().tolist() == [2, *range(RECENT + 2, 2, -1)][:RECENT]

    def test_survives_a_round_trip_through_json_and_forgets_a_deleted_user(self) -> None:
        """What the ranker saves with its state comes back the same; forget drops the user."""
        history = History()
        history.add(np.array([1, 2]), np.array([5, 6]), np.array([LIKE, LIKE]), np.array([100, 200]))
        back = History.from_json(history.to_json())
        assert back.of(1).rows().tolist() == [4] and back.of(2).last_ts == 200
        back.forget(1)
        assert back.of(1) is None


class TestSnapshots:
    def test_no_example_reads_an_event_at_or_after_its_own_time(self) -> None:
        """A poisoned future like (and one in the same second) never shows in the example's recent items."""
        users = np.array([1, 1, 1, 1, 2])
        items = np.array([10, 11, 12, 99, 13])
        kinds = np.full(5, LIKE)
        stamps = np.array([100, 200, 300, 300, 400])  # event 3 (item 99) shares example 2's second
        recent, counts = snapshots(users, items, kinds, stamps, np.array([2, 1]))
        assert recent[0].tolist() == [10, 9] + [-1] * (RECENT - 2) and counts[0] == 2  # rows of items 11 and 10
        assert recent[1].tolist() == [9] + [-1] * (RECENT - 1) and counts[1] == 1
        assert 98 not in recent  # the poisoned item's row

    def test_features_of_an_example_without_history_leave_the_history_columns_zero(self) -> None:
        """No recent items: the similarity columns are zero, and activity says zero events."""
        from catalog import preset_schema

        space = FeatureSpace(preset_schema("movielens"), 8)
        vectors = np.eye(8, dtype=np.float32)[:3]
        empty = RecentItems(np.zeros((0, 8), np.float32), np.zeros((0, 8), np.float32), 0)
        cross = space.cross_features(vectors[:1], [], vectors, np.zeros(3, np.int64), np.zeros(3, np.uint8),
                                     np.zeros(3), np.zeros(3), item_content=vectors, recent=empty)
        assert np.all(cross[:, 8:13] == 0)
        liked = RecentItems(vectors[1:2], vectors[1:2], 4)
        cross = space.cross_features(vectors[:1], [], vectors, np.zeros(3, np.int64), np.zeros(3, np.uint8),
                                     np.zeros(3), np.zeros(3), item_content=vectors, recent=liked)
        assert cross[1, 8] == 1.0 and cross[0, 8] == 0.0 and cross[1, 11] == 1.0  # the liked item itself: cosine 1
        assert cross[0, 12] > 0

    def test_per_row_histories_give_each_row_what_its_own_history_would(self) -> None:
        """Training's batched history columns (each row its own padded history) equal one shared-history call per row."""
        from catalog import preset_schema

        rng = np.random.default_rng(3)
        space = FeatureSpace(preset_schema("movielens"), 8)
        items = rng.normal(size=(6, 8)).astype(np.float32)
        content = items / np.linalg.norm(items, axis=1, keepdims=True)
        recent = np.array([[2, 4, -1], [-1, -1, -1], [5, 0, 1]])
        valid = recent >= 0
        safe = np.where(valid, recent, 0)
        batched = RecentItems(items[safe], content[safe], np.array([3, 0, 9]), valid)
        cross = space.cross_features(items[:3], [], items[:3], np.zeros(3, np.int64), np.zeros(3, np.uint8),
                                     np.zeros(3), np.zeros(3), item_content=content[:3], recent=batched)
        for n in range(3):
            mine = recent[n][valid[n]]
            one = RecentItems(items[mine], content[mine], int(batched.events[n]))  # type: ignore[index]
            alone = space.cross_features(items[n:n + 1], [], items[n:n + 1], np.zeros(1, np.int64),
                                         np.zeros(1, np.uint8), np.zeros(1), np.zeros(1), item_content=content[n:n + 1],
                                         recent=one)
            assert np.allclose(cross[n, 8:13], alone[0, 8:13], atol=1e-6)


class TestTrend:
    def test_training_reads_the_trend_serving_held_before_each_example(self) -> None:
        """trend_before(cutoff) equals ItemTable.trend after the first `cutoff` events, fed in uneven batches, over a
        log long enough (many half-lives) that the weights must be rebased."""
        from catalog import preset_schema

        rng = np.random.default_rng(4)
        events = rng.integers(1, 40, 40 * max(TREND_HALF_LIVES)) * (rng.random(40 * max(TREND_HALF_LIVES)) < 0.9)
        table = ItemTable(FeatureSpace(preset_schema("movielens"), 8))
        table.size = 45  # rows in use (what apply() would set for items up to id 45)
        table._grow(45)
        cutoffs = np.sort(rng.choice(len(events), 6, replace=False))
        rows = rng.integers(0, 45, 6)
        served, taken = [], 0
        for cut, row in zip(cutoffs.tolist(), rows.tolist()):
            while taken < cut:
                step = min(int(rng.integers(1, 30_000)), cut - taken)
                table.add_popularity(events[taken:taken + step])  # ids: 0 is no item, and is not counted
                taken += step
            served.append(table.trend[row].copy())
        rebuilt = trend_before(events - 1, rows, cutoffs)
        assert np.allclose(rebuilt, np.array(served), rtol=1e-6, atol=1e-9)

    def test_an_item_trends_by_its_recent_events_and_fades_after(self) -> None:
        """Ten events on an item weigh ten; after one half-life of other items' events, five."""
        rows = np.r_[np.zeros(10, np.int64), np.ones(TREND_HALF_LIVES[0], np.int64)]
        trend = trend_before(rows, np.array([0, 0]), np.array([10, len(rows)]))
        assert np.allclose(trend[0], [sum(0.5 ** (k / h) for k in range(10)) for h in TREND_HALF_LIVES])
        assert np.isclose(trend[1, 0] / trend[0, 0], 0.5)


class TestTransitions:
    def test_an_item_that_always_follows_gets_the_whole_share_and_older_items_weigh_less(self) -> None:
        """Item 1 is always followed by item 2 (next position), and item 3 by 4: from the history (newest first) [1, 3]
        item 2 scores 1 and item 4 scores DECAY; the newest-only column knows item 2 alone; a pad adds nothing."""
        from ranker.transitions import DECAY

        table = Transitions.fit([np.array([1, 2]), np.array([3, 4]), np.array([1, 2])], items=6)
        scores = table.scores(np.array([1, 3, -1]), np.array([2, 4, 5]))
        assert np.allclose(scores[:, 0], [1.0, DECAY, 0.0]) and np.allclose(scores[:, 1], [1.0, 0.0, 0.0])
        per_row = table.scores(np.tile([1, 3, -1], (3, 1)), np.array([2, 4, 5]))
        assert np.allclose(per_row, scores)

    def test_only_the_strongest_followers_are_kept_and_a_round_trip_keeps_them(self, tmp_path) -> None:
        """KEEP bounds each item's followers (the strongest stay, shares as of all followers); save/load is exact."""
        table = Transitions.fit([np.array([0, 1, 1, 1, 2])], items=4, window=1, keep=1)
        assert np.allclose(table.share(np.array([0, 1, 1]), np.array([1, 1, 2])), [1.0, 2 / 3, 0.0])
        table.save(tmp_path / "t.npz")
        back = Transitions.load(tmp_path / "t.npz")
        assert back.share(np.array([1]), np.array([1])).tolist() == [np.float32(2 / 3)]

    def test_an_item_past_the_table_follows_nothing(self) -> None:
        """A candidate added after the table was learned (a column past it) shares 0, never the share of another
        pair whose key it would alias (row 0 -> column 3 against row 1 -> column 0, in a 3-item table)."""
        table = Transitions.fit([np.array([1, 0])], items=3, window=1)
        assert table.share(np.array([1]), np.array([0])).tolist() == [1.0]
        assert table.share(np.array([0, 0]), np.array([3, -1])).tolist() == [0.0, 0.0]



class TestExampleRanks:
    def test_ranks_equal_a_full_stable_sort(self) -> None:
        """The example builder's counted ranks are where a full stable descending sort puts each item, ties included."""
        rng = np.random.default_rng(1)
        scores = rng.integers(0, 20, 500).astype(np.float32)
        scores[[3, 7]] = -np.inf
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(500, np.int64)
        rank[order] = np.arange(500)
        columns = rng.choice(500, 40, replace=False)
        assert stable_ranks(scores, columns).tolist() == rank[columns].tolist()

    def test_ranks_among_the_interest_candidates_as_serving_counts_them(self) -> None:
        """The builder ranks an item among each row's interest candidates (its best 40 here) as serving ranks a
        candidate: where a stable descending sort of the candidates, plus the item, puts it. An item from outside
        (another source's) comes after all of them; ties and -inf (unservable) items included. When the candidates
        are the whole row, that is the full sort's rank."""
        rng = np.random.default_rng(2)
        scores = rng.integers(0, 50, (6, 400)).astype(np.float32)
        scores[:, :5] = -np.inf
        scores[1] = rng.standard_normal(400)
        pool = np.argpartition(-scores, 39, axis=1)[:, :40]
        columns = np.c_[rng.integers(0, 400, (6, 3)), pool[:, :10]]
        expected = []
        for row, best, cols in zip(scores, pool, columns):
            ranks = []
            for column in cols.tolist():
                shown = np.union1d(best, [column])  # by index: a stable sort breaks ties by it
                order = shown[np.argsort(-row[shown], kind="stable")]
                ranks.append(int(np.flatnonzero(order == column)[0]))
            expected.append(ranks)
        assert pool_ranks(scores, pool, columns).tolist() == expected
        everything = np.broadcast_to(np.arange(400), (6, 400))
        assert pool_ranks(scores, everything, columns).tolist() == \
            [stable_ranks(row, cols).tolist() for row, cols in zip(scores, columns)]
