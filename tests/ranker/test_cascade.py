"""The ranking cascade: a light first stage over every candidate, the full model on the best few hundred."""

from __future__ import annotations

import numpy as np

from feedserve.v1 import ranker_pb2
from mesh.methods import HeapOutputs
from ranker.cascade import LIGHT_FILE, LightFit, load_light_stage, top_rows
from ranker.service import MAX_CANDIDATES
from ranker.transitions import Transitions
from tests.stack import ranker_for


def _rank(ranker, catalog, user: int, k: int = 20) -> tuple[ranker_pb2.RankResponse, HeapOutputs]:
    outputs = HeapOutputs()
    reply = ranker.rank(ranker_pb2.RankRequest(user_id=user, k=k, return_all_scores=True),
                        {"user_vector": catalog.vector(user)}, outputs)
    return reply, outputs


def test_a_cascade_that_keeps_every_candidate_returns_the_full_models_top_k(catalog, manifest) -> None:
    """With the light stage keeping every candidate, the cascade's feed is the full model's: the same items in the
    same order with the same scores, for several users."""
    full = ranker_for(catalog, manifest, cascade_keep=0)
    everything = ranker_for(catalog, manifest, cascade_keep=MAX_CANDIDATES)
    assert full.light is None and everything.light is not None
    for user in (1, 7, 42):
        a, _ = _rank(full, catalog, user)
        b, _ = _rank(everything, catalog, user)
        assert [i.item_id for i in a.items] == [i.item_id for i in b.items]
        np.testing.assert_allclose([i.score for i in a.items], [i.score for i in b.items], rtol=1e-6)
        assert a.candidates_scored == b.candidates_scored == a.candidates_considered


def test_the_full_model_scores_only_the_kept_candidates_and_scores_them_as_it_would_alone(catalog, manifest) -> None:
    """Keeping 200: the full model scores 200 of the 2,400 considered, and each kept candidate's score is the one the
    full model gives it when it scores every candidate (the rank feature is taken among all of them). The model's
    scores: no blend, which standardises over whichever candidates are scored."""
    full = ranker_for(catalog, manifest, cascade_keep=0, follow_weight=0.0)
    cascade = ranker_for(catalog, manifest, cascade_keep=200, follow_weight=0.0)
    reply, outputs = _rank(cascade, catalog, 3)
    assert reply.candidates_considered > 1000 and reply.candidates_scored == 200
    _, every = _rank(full, catalog, 3)
    by_id = dict(zip(every.arrays["candidate_ids"].tolist(), every.arrays["scores"].tolist()))
    kept = outputs.arrays["candidate_ids"].tolist()
    np.testing.assert_allclose(outputs.arrays["scores"], [by_id[i] for i in kept], rtol=1e-5, atol=1e-6)


def test_the_cascade_keeps_a_candidate_that_the_follow_blend_lifts(catalog, manifest) -> None:
    """The light stage's cut is blended with what follows the user's latest items as the final scores are: the
    candidate the full model scores lowest of all, made the one follower of the user's newest item, is kept by a
    cascade keeping 50 of 2,400 and, with the follow weight alone, leads the feed."""
    full = ranker_for(catalog, manifest, cascade_keep=0, follow_weight=0.0)
    cascade = ranker_for(catalog, manifest, cascade_keep=50, follow_weight=float("inf"))
    user = next(u for u in range(1, 10_000) if cascade.history.of(u) is not None)
    _, every = _rank(full, catalog, user)
    target = int(every.arrays["candidate_ids"][np.argmin(every.arrays["scores"])]) - 1
    latest = int(cascade.history.of(user).rows()[0])
    indptr = np.zeros(cascade.items.size + 1, np.int64)
    indptr[latest + 1:] = 1
    cascade.resident.primary.transitions = Transitions(indptr, np.array([target], np.int32), np.array([1.0], np.float32))
    reply, _ = _rank(cascade, catalog, user)
    assert reply.candidates_scored == 50 and reply.items[0].item_id == target + 1


def test_the_light_stage_is_fitted_once_per_model_and_kept_beside_it(catalog, manifest) -> None:
    """The first ranker with the cascade fits the light stage and saves it in the model's directory; it is loaded
    for that model version, and the fit keeps most of the full model's top 20 among its kept candidates."""
    ranker_for(catalog, manifest, cascade_keep=300)
    assert (manifest.directory / LIGHT_FILE).exists()
    stage = load_light_stage(manifest.directory, f"{manifest.name}/{manifest.version}")
    assert stage is not None and stage.fitted_on > 0 and stage.agreement >= 0.9
    assert load_light_stage(manifest.directory, f"{manifest.name}/other") is None


def test_a_light_fit_recovers_a_ranking_it_can_express() -> None:
    """When the full scores are a linear function of the light stage's units and the dot product, the fitted stage
    keeps exactly the full model's top candidates."""
    rng = np.random.default_rng(0)
    truth = np.zeros(64, np.float32)
    truth[rng.choice(64, 8, replace=False)] = rng.standard_normal(8)
    fit = LightFit(keep=50, units=16)
    requests = []
    for _ in range(20):
        request, terms, dot = rng.standard_normal(64), rng.standard_normal((400, 64)), rng.standard_normal(400)
        full = np.maximum(terms + request, 0) @ truth + 0.5 * dot + 3.0
        fit.add(request.astype(np.float32), terms.astype(np.float32), dot.astype(np.float32), full)
        requests.append((request, terms, dot, full))
    stage = fit.finish()
    assert stage.agreement == 1.0
    request, terms, dot, full = requests[0]
    light = stage.scores(request.astype(np.float32), terms[:, stage.units].astype(np.float32), dot.astype(np.float32))
    assert set(top_rows(light, 50).tolist()) == set(top_rows(full, 50).tolist())


def test_top_rows_keeps_the_best_in_their_order() -> None:
    """The best `keep` indices in ascending index order; all of them when there are no more than `keep`."""
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.2])
    assert top_rows(scores, 2).tolist() == [1, 3]
    assert top_rows(scores, 9).tolist() == [0, 1, 2, 3, 4]


def test_on_an_empty_catalog_the_full_model_ranks_until_items_arrive_then_the_cascade_is_fitted(
        catalog, manifest, encoder_home, tmp_path) -> None:
    """A model version with no light stage yet, started on a catalog with no items: the ranker starts (the full
    model ranks); once items are encoded and applied, the light stage is fitted in the background and the next
    feed goes through the cascade."""
    import shutil

    from catalog import Item, open_store
    from catalog.encoding import ContentEncoder
    from engines import load_manifest
    from engines.sentence import SentenceEncoder, ensure_encoder
    from ranker.service import Ranker
    from tests.stack import CLOCK, serve_model_space

    copy = tmp_path / "model"
    shutil.copytree(manifest.directory, copy)
    (copy / LIGHT_FILE).unlink(missing_ok=True)
    model = load_manifest(copy)
    url = str(tmp_path / "empty.db")
    open_store(url).close()
    serve_model_space(url, catalog, model)
    ranker = Ranker(open_store(url), catalog.schema, model, follow=False, clock=lambda: CLOCK, cascade_keep=20)
    assert ranker.light is None
    store = open_store(url)
    store.upsert_items([Item(f"item-{n}", f"Story {n} about {topic}", f"All about {topic}, part {n}", [topic])
                        for n in range(60) for topic in (("hiking", "cooking", "jazz")[n % 3],)])
    ContentEncoder(open_store(url), SentenceEncoder(ensure_encoder(encoder_home)).encode_batch).drain()
    ranker.follower.poll()
    assert ranker.cascade_fit is not None
    ranker.cascade_fit.join(120)
    assert ranker.light is not None and (copy / LIGHT_FILE).exists()
    user = ranker.items.vectors[0] / np.linalg.norm(ranker.items.vectors[0])
    reply = ranker.rank(ranker_pb2.RankRequest(user_id=1, k=5), {"user_vector": user}, HeapOutputs())
    assert reply.candidates_considered == 60 and reply.candidates_scored == 20 and len(reply.items) == 5


def test_the_cascade_never_keeps_fewer_candidates_than_the_feed_asks_for(catalog, manifest) -> None:
    """Keeping 20 while a request asks for 50 items: the full model scores 50, and 50 come back."""
    cascade = ranker_for(catalog, manifest, cascade_keep=20)
    reply, _ = _rank(cascade, catalog, 9, k=50)
    assert reply.candidates_scored == 50 and len(reply.items) == 50
