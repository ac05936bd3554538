"""Learning from the data: vectors and ranker trained on real MovieLens-100K events, evaluated against popularity
on a per-user split in time; new items placed by their content; the split never leaks the future."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from catalog import USER, Item, open_store, preset_schema
from catalog.datasets import build_store, dataset_dir
from engines.sentence import DIM
from learning import evaluation
from learning.evaluation import SplitError, check_split
from learning.pipeline import fit_and_export
from learning.training import MODEL_NAME, TrainingError
from learning.vectors import AlsParams, per_user_holdout
from ranker.features import FEATURE_DIM
from ranker.service import DEFAULT_CANDIDATES, Ranker

ONE_SETTING = [AlsParams(32, 1.0, 5.0)]
SLICE_USERS = 400  # users 1..400 of MovieLens-100K: about 40,000 real events


@pytest.fixture(scope="module")
def movielens(content_encoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MovieLens-100K from the installed recbole package, imported and encoded once (never written by tests)."""
    try:
        dataset_dir("ml-100k")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    path = tmp_path_factory.mktemp("movielens") / "ml-100k.db"
    build_store("ml-100k", path, content_encoder.encode_batch).close()
    return path


def _slice(movielens: Path, target: Path, shuffle_items: bool = False) -> str:
    """A copy holding the events of the first SLICE_USERS users (their items shuffled across events when asked)."""
    source = open_store(movielens)
    events = source.events()
    keep = events["seq"][events["user"] <= SLICE_USERS]
    copy = open_store(target)
    source.copy_to(copy, events=keep)
    if shuffle_items:  # the same items, as often, but no longer chosen by whom
        events = copy.events()
        rng = np.random.default_rng(0)
        with copy._transaction() as cur:  # a deliberately corrupted log, written below the API on purpose
            cur.executemany("UPDATE events SET item_id = ? WHERE seq = ?",
                            list(zip(rng.permutation(events["item"]).tolist(), events["seq"].tolist())))
    copy.close()
    return str(target)


class TestTrainingOnRealData:
    def test_a_small_real_slice_exports_a_version_that_beats_popularity(self, movielens, tmp_path: Path) -> None:
        """On 40,000 real MovieLens events the served pipeline (the real Ranker) beats popularity on NDCG@20 of the
        per-user split, and the version is exported with every baseline's figure beside its own (ALS, EASE,
        item-kNN, GRU4Rec), the ranking stage's gain over its retrieval and the new-user feed's."""
        store = open_store(_slice(movielens, tmp_path / "slice.db"))
        manifest = fit_and_export(store, preset_schema("movielens"), tmp_path / "models" / MODEL_NAME, DIM,
                                  grid=ONE_SETTING, epochs=2, quick=True)
        m = manifest.metrics
        assert m["ndcg20"] > m["ndcg20_popularity"] > 0
        for key in ("ndcg20_recent_popularity", "ndcg20_als", "ndcg20_ease", "ndcg20_item_knn", "ndcg20_sequential",
                    "ndcg20_retrieval", "ndcg20_cold_start", "recall100_retrieval", "coverage"):
            assert 0 < m[key] <= 1
        assert m["ratio_vs_best"] > 0 and m["ranker_gain"] > 0 and m["cold_start_ratio"] > 0
        assert (tmp_path / "models" / MODEL_NAME / "1" / "decomposed.int8.onnx").exists()

    def test_a_shuffled_label_set_is_refused(self, movielens, tmp_path: Path) -> None:
        """Events whose items were shuffled across users teach nothing beyond popularity: training refuses to
        export, saying why, and leaves no version behind."""
        store = open_store(_slice(movielens, tmp_path / "shuffled.db", shuffle_items=True))
        root = tmp_path / "models" / MODEL_NAME
        with pytest.raises(TrainingError, match="does not beat popularity"):
            fit_and_export(store, preset_schema("movielens"), root, DIM, grid=ONE_SETTING, epochs=2, quick=True)
        assert not (root / "1").exists()

    def test_the_ranker_learns_from_the_columns_its_real_examples_use(self, movielens, tmp_path: Path,
                                                                       monkeypatch) -> None:
        """On real examples (the first training step of the slice), the columns in use are a minority of the
        4,736, every column outside them is zero in every example, and the rows built for those columns alone are
        exactly the full rows' columns."""
        from learning import training

        class Caught(Exception):
            pass

        seen = []

        def catch(examples, *args):
            seen.append(examples)
            raise Caught

        monkeypatch.setattr(training, "fit_ranker", catch)
        store = open_store(_slice(movielens, tmp_path / "slice.db"))
        with pytest.raises(Caught):
            training.train(training.load_catalog(store, preset_schema("movielens"), DIM), ONE_SETTING)
        examples = seen[0]
        active = training.active_columns(examples)
        index = np.arange(0, len(examples), 7)
        full = examples.features(index)
        assert 0 < len(active) < FEATURE_DIM // 2
        assert not np.delete(full, active, axis=1).any()
        np.testing.assert_array_equal(examples.features(index, active), full[:, active])


@pytest.fixture(scope="module")
def served_slice(movielens, tmp_path_factory: pytest.TempPathFactory):
    """The real slice with a model trained on it and its space published (no evaluation: quick)."""
    directory = tmp_path_factory.mktemp("served-slice")
    store = open_store(_slice(movielens, directory / "slice.db"))
    manifest = fit_and_export(store, preset_schema("movielens"), directory / "models" / MODEL_NAME, DIM,
                              grid=ONE_SETTING, epochs=2, require_better=False, evaluate=False)
    store.publish_space(int(manifest.extra["space"]))
    return directory / "slice.db", manifest


@pytest.fixture(params=["movielens", "default-world"])
def served(request: pytest.FixtureRequest, tmp_path: Path):
    """A served store, its model and schema: the real MovieLens slice, or the simulator's world as `feedserve up`
    builds it by default (smaller: the test catalog), whose users have tastes a collaborative learner can find."""
    if request.param == "movielens":
        path, manifest = request.getfixturevalue("served_slice")
        return path, manifest, preset_schema("movielens")
    catalog = request.getfixturevalue("catalog")
    return Path(catalog.copy(tmp_path / "world")), catalog.manifest, catalog.schema


class TestDriftOnTheLearnedSpace:
    def test_a_like_moves_the_next_feed_toward_the_items_neighbourhood(self, served, tmp_path: Path) -> None:
        """On real data and on the default world: after a user likes an item far from their taste (three likes,
        through the paramserver's drift), the Ranker's next feed for their moved vector sits closer to that item in
        the learned space."""
        from feedserve.v1 import common_pb2, paramserver_pb2, ranker_pb2
        from learning.training import current_user_vectors, load_catalog
        from mesh.methods import HeapOutputs
        from paramserver.service import ParamServer

        path, manifest, schema = served
        store = open_store(path)
        ids, vectors = current_user_vectors(store, load_catalog(store, schema, DIM))
        paramserver = ParamServer(DIM, tmp_path / "paramserver", store=open_store(path))
        ranker = Ranker(open_store(path), schema, manifest, follow=False)
        try:
            paramserver.upsert(paramserver_pb2.UpsertRequest(table=paramserver_pb2.TABLE_USER),
                               {"keys": ids, "values": vectors}, HeapOutputs())
            user = int(ids[10])
            learned = np.flatnonzero(ranker.items.servable & (np.linalg.norm(ranker.items.vectors, axis=1) > 0.8)) + 1
            unit = ranker.items.vectors / np.maximum(np.linalg.norm(ranker.items.vectors, axis=1, keepdims=True), 1e-9)
            start = vectors[10]
            far = int(learned[np.argsort(unit[learned - 1] @ start)[len(learned) // 10]])

            def feed() -> float:
                vector, _ = paramserver.tables[paramserver_pb2.TABLE_USER].lookup(np.array([user], np.int64))
                reply = ranker.rank(ranker_pb2.RankRequest(user_id=user, k=20), {"user_vector": vector[0]}, HeapOutputs())
                return float(np.mean(unit[[i.item_id - 1 for i in reply.items]] @ unit[far - 1]))

            before = feed()
            for _ in range(3):
                reply = paramserver.drift(paramserver_pb2.DriftRequest(user_id=user, item_id=far,
                                                                       event=common_pb2.EVENT_TYPE_LIKE), {}, HeapOutputs())
                assert reply.applied
            # the likes reach the ranker's history too, as its change feed brings them (this ranker does not follow)
            last = ranker.history.of(user).last_ts if ranker.history.of(user) is not None else 0
            ranker.history.add(np.full(3, user), np.full(3, far), np.full(3, common_pb2.EVENT_TYPE_LIKE),
                               np.full(3, last + 1))
            assert feed() > before + 0.05
        finally:
            ranker.close()
            paramserver.close()


class TestNewUser:
    def test_a_new_users_second_feed_follows_their_first_like(self, served_slice, tmp_path: Path) -> None:
        """On real data: a user nobody has seen gets the cold-start feed; their first like is logged (the Ranker
        follows it into their history) and drifted (the paramserver creates their vector at the item's place), and
        their next feed is personalised: not cold, and nearer the liked item in the learned space."""
        from catalog import Event
        from feedserve.v1 import common_pb2, paramserver_pb2, ranker_pb2
        from mesh.methods import HeapOutputs
        from paramserver.service import ParamServer

        path, manifest = served_slice
        store = open_store(path)
        paramserver = ParamServer(DIM, tmp_path / "paramserver", store=open_store(path))
        ranker = Ranker(open_store(path), preset_schema("movielens"), manifest, follow=False)
        try:
            unit = ranker.items.vectors / np.maximum(np.linalg.norm(ranker.items.vectors, axis=1, keepdims=True), 1e-9)
            users, items = store.external_ids()
            liked = int(np.argsort(-ranker.items.popularity[:ranker.items.size])[200]) + 1  # liked, not a blockbuster

            def feed(user: int) -> tuple[ranker_pb2.RankResponse, float]:
                vector, found = paramserver.tables[paramserver_pb2.TABLE_USER].lookup(np.array([user], np.int64))
                tensors = {"user_vector": vector[0]} if found[0] else {}
                reply = ranker.rank(ranker_pb2.RankRequest(user_id=user, k=20), tensors, HeapOutputs())
                return reply, float(np.mean(unit[[i.item_id - 1 for i in reply.items]] @ unit[liked - 1]))

            store.record_events([Event("someone-new", items[1], common_pb2.EVENT_TYPE_IMPRESSION, 0)], int(time.time()))
            user = int(store.resolve(USER, ["someone-new"])[0])
            ranker.follower.poll()
            first, before = feed(user)
            assert first.cold_start
            store.record_events([Event("someone-new", items[liked], common_pb2.EVENT_TYPE_LIKE, 0)], int(time.time()))
            ranker.follower.poll()
            drifted = paramserver.drift(paramserver_pb2.DriftRequest(user_id=user, item_id=liked,
                                                                     event=common_pb2.EVENT_TYPE_LIKE), {}, HeapOutputs())
            assert drifted.created
            second, after = feed(user)
            assert not second.cold_start
            assert ranker.history.of(user).rows().tolist() == [liked - 1]
            assert after > before + 0.05
        finally:
            ranker.close()
            paramserver.close()


class TestSplit:
    def test_each_users_held_out_events_are_their_latest(self) -> None:
        """The per-user split holds out each user's latest events by time, whatever the log order."""
        users = np.array([1, 2, 1, 1, 2, 1, 2, 1, 1, 1])
        stamps = np.array([50, 10, 40, 30, 30, 20, 20, 10, 60, 70])
        held = per_user_holdout(users, stamps, 0.2)
        check_split(users, stamps, held)
        for user in (1, 2):
            mine = users == user
            assert stamps[mine & held].min() >= stamps[mine & ~held].max()
        assert held[users == 1].sum() == 1 and held[users == 2].sum() == 1

    def test_a_test_event_before_a_training_event_is_caught(self) -> None:
        """check_split compares timestamps: a held-out event earlier than the same user's training event fails."""
        with pytest.raises(SplitError, match="user 1"):
            check_split(np.array([1, 1]), np.array([10, 20]), np.array([True, False]))

    def test_the_evaluated_model_reads_no_held_out_event(self, catalog, monkeypatch, tmp_path: Path) -> None:
        """The model evaluated is trained on a copy holding only the training part: every event it reads is at or
        before its user's first held-out event, and none of the held-out events is there at all."""
        store = open_store(catalog.copy(tmp_path / "store"))
        everything = store.events()
        held = per_user_holdout(everything["user"], everything["timestamp"], evaluation.TEST_SHARE)
        read: list[dict[str, np.ndarray]] = []
        real_train = evaluation.train

        def spying_train(trained_catalog, *args, **kwargs):
            read.append(trained_catalog.events)
            return real_train(trained_catalog, *args, **kwargs)

        monkeypatch.setattr(evaluation, "train", spying_train)
        evaluation.evaluate_per_user(store, catalog.schema, DIM, [AlsParams(8, 1.0, 5.0, iterations=4)], epochs=1)
        (seen,) = read
        assert not np.isin(seen["seq"], everything["seq"][held]).any()
        first_test = {}
        for user, stamp in zip(everything["user"][held].tolist(), everything["timestamp"][held].tolist()):
            first_test[user] = min(stamp, first_test.get(user, stamp))
        assert all(stamp <= first_test.get(user, stamp) for user, stamp in
                   zip(seen["user"].tolist(), seen["timestamp"].tolist()))


class TestNewItems:
    def test_a_new_item_is_retrievable_by_content_then_learned_after_training(self, catalog, manifest, content_encoder,
                                                                               tmp_path: Path) -> None:
        """An item nobody has touched is servable at once, placed in the learned space by its content's projection
        (interest retrieval finds it for a user at that spot); after the next training and publish it has a
        learned vector, and that is what the change feed serves."""
        from catalog import ITEM, Event
        from catalog.encoding import ContentEncoder
        from tests.catalog_fixture import FIXTURE_ALS

        store = open_store(catalog.copy(tmp_path / "store"))
        store.upsert_items([Item("brand-new-item", "A lighthouse keeper's winter", "storms, a lamp, a logbook", ["Drama"])])
        ContentEncoder(store, content_encoder.encode_batch).drain()
        new_id = int(store.resolve(ITEM, ["brand-new-item"])[0])
        space = store.active_space()
        assert new_id not in store.learned_items(space)[0]
        ranker = Ranker(store, catalog.schema, manifest, follow=False)
        try:
            placed = ranker.items.vectors[new_id - 1]
            np.testing.assert_allclose(placed, ranker.items.content[new_id - 1] @ store.projection(space), atol=1e-5)
            # among the candidates serving retrieves: on a catalog whose learned items cluster by taste, a placed
            # item (shorter than learned ones) is not among the 60 interest candidates of 100, but among 1,440 of 2,400
            found = ranker.retriever.retrieve(placed / np.linalg.norm(placed), DEFAULT_CANDIDATES)
            assert "interest" in found.source_names(int(np.flatnonzero(found.ids == new_id)[0]))
        finally:
            ranker.close()

        stamp = int(store.events()["timestamp"].max()) + 60
        store.record_events([Event(f"u{u}", "brand-new-item", 3, stamp + u) for u in range(1, 40)], stamp)
        retrained = fit_and_export(store, catalog.schema, tmp_path / "models" / MODEL_NAME, DIM, grid=FIXTURE_ALS,
                                   epochs=1, require_better=False, evaluate=False)
        store.publish_space(int(retrained.extra["space"]))
        ids, vectors = store.learned_items(store.active_space())
        assert new_id in ids
        learned = vectors[int(np.flatnonzero(ids == new_id)[0])]
        served = {i.id: i for i in store.changes(0, limit=100_000)[0]}[new_id]
        np.testing.assert_array_equal(served.vector, learned)


def test_fitting_als_in_a_fresh_process_warns_about_nothing() -> None:
    """The first ALS fit of a process (what `feedserve up` and `train` do) says nothing about BLAS threads: the
    limit of one BLAS thread inside implicit's own covers the BLAS implicit itself loads."""
    import subprocess
    import sys

    script = ("import numpy as np, scipy.sparse as sp\n"
              "from learning.vectors import AlsParams, fit_als\n"
              "fit_als(sp.random(200, 300, density=0.05, format='csr', dtype=np.float32), AlsParams())\n")
    ran = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert ran.returncode == 0 and "OpenBLAS" not in ran.stderr, ran.stderr[-2000:]
