"""Users' recent history, as serving follows it and training rebuilds it: the latest positive items newest first,
nothing from an example's own moment or later, and the example builder's ranks equal to a full sort's."""

from __future__ import annotations

import numpy as np

from learning.training import stable_ranks
from ranker.features import FeatureSpace, RecentItems
from ranker.history import RECENT, History, snapshots

LIKE, CLICK, SKIP = 3, 2, 6


class TestHistory:
    def test_keeps_the_latest_positive_items_newest_first(self) -> None:
        """Skips count as activity but are not wanted items; a re-liked item moves to the front; at most RECENT."""
        history = History()
        items = np.array([1, 2, 3, 4, 5, 6, 7, 3])
        kinds = np.array([LIKE, SKIP, CLICK, LIKE, LIKE, LIKE, LIKE, LIKE])
        history.add(np.full(8, 9), items, kinds, np.arange(8) * 10)
        entry = history.of(9)
        assert entry is not None and entry.events == 8
        assert entry.rows().tolist() == [2, 6, 5, 4, 3][:RECENT]  # item 3 (row 2) again last; item 2 skipped

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
        assert recent[0].tolist() == [10, 9, -1, -1, -1] and counts[0] == 2  # rows of items 11 and 10
        assert recent[1].tolist() == [9, -1, -1, -1, -1] and counts[1] == 1
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
