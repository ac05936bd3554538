"""Versions side by side in one ranker: hot swap by the registry in the store, in-flight requests, shadow scoring, the memory budget."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from catalog import Item, open_store
from catalog.encoding import ContentEncoder
from engines import ModelManifest
from engines.base import load_manifest, write_manifest
from engines.sentence import SentenceEncoder, ensure_encoder
from feedserve.v1 import ranker_pb2
from learning.refresh import export_shuffled
from mesh.methods import HeapOutputs
from ranker.service import Ranker
from tests.stack import CLOCK


def copy_version(manifest: ModelManifest, root: Path, version: str) -> ModelManifest:
    """The same model exported again as another version (its light stage is fitted afresh for its own key)."""
    target = root / version
    shutil.copytree(manifest.directory, target, ignore=shutil.ignore_patterns("light-stage.npz"))
    write_manifest(dataclasses.replace(load_manifest(target), version=version))
    return load_manifest(target)


@pytest.fixture
def versions(catalog, manifest: ModelManifest, tmp_path: Path) -> tuple[Path, ModelManifest, ModelManifest]:
    """A models folder holding version 1 (the catalog's model) and version 2 (the same model, exported again)."""
    root = tmp_path / "models" / manifest.name
    first = copy_version(manifest, root, "1")
    return root, first, copy_version(manifest, root, "2")


def routed_ranker(catalog, manifest: ModelManifest, tmp_path: Path, **options) -> Ranker:
    store = catalog.copy(tmp_path / "store")
    return Ranker(open_store(store), catalog.schema, manifest, poll_s=0.01, clock=lambda: CLOCK,
                  routing=True, **options)


def _rank(core: Ranker, user: int, catalog, **fields) -> ranker_pb2.RankResponse:
    return core.rank(ranker_pb2.RankRequest(user_id=user, k=20, include_seen=True, **fields),
                     {"user_vector": catalog.vector(user)}, HeapOutputs())


def test_a_ranker_registers_the_version_it_starts_on_as_the_primary(catalog, versions, tmp_path) -> None:
    """With an empty registry, the ranker writes its family with the version it serves as primary."""
    _, first, _ = versions
    core = routed_ranker(catalog, first, tmp_path)
    try:
        family = core.store.registry().family(first.name)
        assert family.primary == "1" and family.versions["1"].footprint_bytes > 0
    finally:
        core.close()


def test_in_flight_requests_finish_on_their_version_during_a_swap(catalog, versions, tmp_path) -> None:
    """A request that began on version 1 (held waiting for the catalog) answers from version 1 after version 2 has
    been promoted and swapped in; the next request is answered by version 2."""
    root, first, second = versions
    core = routed_ranker(catalog, first, tmp_path)
    try:
        user = int(catalog.user_ids[0])
        # the store's next numbers: the registry's change below takes the first, the item the second
        waiting = core.store.sequence() + 2
        answers: list[ranker_pb2.RankResponse] = []
        held = threading.Thread(target=lambda: answers.append(
            _rank(core, user, catalog, min_sequence=waiting, min_sequence_wait_ms=60_000)))
        held.start()
        core.store.change_registry(lambda r: (r.family(first.name).stage(second.directory, 0, 1.0),
                                        r.family(first.name).promote("2", 2.0)))
        assert core.rollout is not None and core.rollout.settle(120)
        assert core.resident.primary.version == "2"
        assert held.is_alive()  # still waiting for the catalog, on the version it began with
        core.store.upsert_items([Item("swap-release", "An item that lets the held request go on")])
        held.join(60)
        assert answers and answers[0].model_version == "1" and len(answers[0].items) == 20
        assert _rank(core, user, catalog).model_version == "2"
    finally:
        core.close()


def test_a_canary_answers_its_share_of_users_and_the_rest_stay_on_the_primary(catalog, versions, tmp_path) -> None:
    """With version 2 as a 50% canary, each user is answered by the version the registry's salted hash gives them."""
    root, first, second = versions
    core = routed_ranker(catalog, first, tmp_path)
    try:
        routing, _ = core.store.change_registry(lambda r: (r.family(first.name).stage(second.directory, 0, 1.0),
                                                     r.family(first.name).canary_version("2", 0.5, 2.0)))
        assert core.rollout is not None and core.rollout.settle(120)
        family = routing.family(first.name)
        users = [int(u) for u in catalog.user_ids[:40]]
        for user in users:
            assert _rank(core, user, catalog).model_version == family.route(user)
        assert {family.route(u) for u in users} == {"1", "2"}
        assert _rank(core, users[0], catalog, model_version="1").model_version == "1"  # the gateway's choice holds
    finally:
        core.close()


def test_shadow_scoring_never_changes_a_response(catalog, manifest, versions, tmp_path) -> None:
    """With a broken version (shuffled weights) shadowing every request, each answer is exactly the one given
    without a shadow; the shadow's figures show it ranked them differently."""
    root, first, _ = versions
    broken = export_shuffled(first, root, seed=3)
    core = routed_ranker(catalog, first, tmp_path)
    try:
        users = [int(u) for u in catalog.user_ids[:12]]
        before = [_rank(core, u, catalog) for u in users]
        core.store.upload_version(broken.directory)
        core.store.change_registry(lambda r: (r.family(first.name).stage(broken.directory, 0, 1.0),
                                        setattr(r.family(first.name), "shadow_share", 1.0),
                                        r.family(first.name).shadow_version(broken.version, 2.0)))
        assert core.rollout is not None and core.rollout.settle(120)
        assert core.resident.shadow is not None and core.resident.shadow.version == broken.version
        after = [_rank(core, u, catalog) for u in users]
        for a, b in zip(before, after):
            assert a.model_version == b.model_version == "1"
            assert [(i.item_id, i.score) for i in a.items] == [(i.item_id, i.score) for i in b.items]
        assert core.shadow.wait_until_handled(len(users) // 2, 60)
        figures = core.models(ranker_pb2.ModelsRequest(), {}, HeapOutputs()).shadow
        assert figures.shadow == f"{first.name}/{broken.version}" and figures.primary == f"{first.name}/1"
        assert figures.compared >= len(users) // 2 and figures.spearman < 0.9
    finally:
        core.close()


def test_the_ranker_does_not_load_a_version_over_its_memory_budget(catalog, versions, tmp_path) -> None:
    """A routing that names a canary the budget cannot hold beside the primary (written past the gateway's check)
    leaves the canary unloaded, says why, and keeps serving the primary."""
    root, first, second = versions
    core = routed_ranker(catalog, first, tmp_path)
    try:
        def squeeze(routing) -> None:
            family = routing.family(first.name)
            family.stage(second.directory, 0, 1.0)
            family.canary_version("2", 0.5, 2.0)  # a footprint of 0 passes the routing's own check
            family.memory_budget_bytes = core.resident.primary.resident_bytes + 1

        core.store.change_registry(squeeze)
        assert core.rollout is not None and core.rollout.settle(120)
        status = core.models(ranker_pb2.ModelsRequest(), {}, HeapOutputs())
        assert "over the memory budget" in status.not_loaded["2"]
        assert [m.version for m in status.models] == ["1"] and core.resident.canary is None
        assert all(_rank(core, int(u), catalog).model_version == "1" for u in catalog.user_ids[:10])
    finally:
        core.close()


def test_versions_loaded_side_by_side_follow_the_catalog(catalog, versions, encoder_home, tmp_path) -> None:
    """An item written and encoded after a canary was loaded is coded by both versions' item towers."""
    root, first, second = versions
    core = routed_ranker(catalog, first, tmp_path)
    try:
        core.store.change_registry(lambda r: (r.family(first.name).stage(second.directory, 0, 1.0),
                                        r.family(first.name).canary_version("2", 0.5, 2.0)))
        assert core.rollout is not None and core.rollout.settle(120)
        core.store.upsert_items([Item("both-versions", "Kayaking the fjords", "paddles, cliffs", ["travel"])])
        encoder = SentenceEncoder(ensure_encoder(encoder_home))
        ContentEncoder(open_store(tmp_path / "store" / "catalog.db"), encoder.encode_batch).drain()
        assert core.follower.wait_for(core.store.sequence(), 30)
        row = int(core.store.resolve(1, ["both-versions"])[0]) - 1
        expected = core.resident.primary.item_terms(core.items, np.array([row]))[0]
        for model in (core.resident.primary, core.resident.canary):
            assert model is not None
            np.testing.assert_allclose(model.terms[row], expected, rtol=1e-5, atol=1e-6)
    finally:
        core.close()


def test_a_shadow_identical_to_the_primary_agrees_with_it(catalog, versions, tmp_path) -> None:
    """The shadow's figures measure the right thing: a copy of the primary's model as shadow ranks the same rows
    the same way (Spearman and overlap@20 of 1, no score shift)."""
    root, first, second = versions
    core = routed_ranker(catalog, first, tmp_path)
    try:
        core.store.change_registry(lambda r: (r.family(first.name).stage(second.directory, 0, 1.0),
                                        setattr(r.family(first.name), "shadow_share", 1.0),
                                        r.family(first.name).shadow_version("2", 2.0)))
        assert core.rollout is not None and core.rollout.settle(120)
        users = [int(u) for u in catalog.user_ids[:8]]
        for user in users:
            _rank(core, user, catalog)
        assert core.shadow.wait_until_handled(len(users), 60)
        figures = core.shadow.figures()
        assert figures.spearman > 0.999 and figures.overlap_at_20 == 1.0 and abs(figures.score_shift) < 1e-4
    finally:
        core.close()


def test_a_promote_reaches_two_rankers_on_one_store_through_its_sequence(catalog, versions, tmp_path,
                                                                        monkeypatch) -> None:
    """Two rankers, each with its own connection to one store, and version 2 registered from a directory their
    host does not have (removed once registered): a promote written by a third connection takes the next catalog
    sequence number (each ranker's change feed passes it), both fetch version 2 from the store by SHA-256 into
    their home's cache and swap to it, and the history keeps the reason."""
    monkeypatch.setenv("FEEDSERVE_HOME", str(tmp_path / "host-b"))
    root, first, second = versions
    url = catalog.copy(tmp_path / "store")
    cores = [Ranker(open_store(url), catalog.schema, first, poll_s=0.01, clock=lambda: CLOCK, routing=True)
             for _ in range(2)]
    operator = open_store(url)
    try:
        operator.register_version(second.directory, "trained elsewhere")
        second.directory.rename(tmp_path / "gone")
        before = operator.sequence()
        registry, _ = operator.change_registry(lambda r: r.family(first.name).promote("2", 2.0, why="better offline"))
        assert registry.revision == operator.sequence() == before + 1
        for core in cores:
            assert core.follower.wait_for(registry.revision, 30)  # in the catalog's change feed, in order
            assert core.rollout is not None and core.rollout.settle(120)
            assert core.resident.primary.version == "2"
            assert core.resident.primary.manifest.directory.is_relative_to(tmp_path / "host-b" / "cache" / "models")
            assert _rank(core, int(catalog.user_ids[0]), catalog).model_version == "2"
        change = operator.registry().family(first.name).versions["2"].history[-1]
        assert (change["from"], change["to"], change["why"]) == ("staged", "primary", "better offline")
    finally:
        for core in cores:
            core.close()
        operator.close()
