"""The model registry: states and their changes, sticky canary shares, the memory budget, its rows in the store
(SQLite and PostgreSQL) and the watcher that follows them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from catalog import Store, open_store
from catalog.feed import RegistryWatcher
from catalog.registry import Family, Registry, in_canary
from errors import FailedPrecondition, NotFound, ResourceExhausted


def version_dir(root: Path, version: str, space: int = 1, name: str = "ranker-mlp") -> Path:
    """A minimal exported version: a manifest naming one graph file."""
    directory = root / version
    directory.mkdir(parents=True)
    (directory / "decomposed.onnx").write_bytes(b"\0" * 1000)
    (directory / "manifest.json").write_text(json.dumps({
        "name": name, "version": version, "graphs": {"decomposed": "decomposed.onnx"},
        "metrics": {"ndcg20": 0.1}, "extra": {"space": space, "trained_to_sequence": 42}}))
    return directory


def family_of(tmp_path: Path, *versions: str, footprint: int = 1 << 20) -> Family:
    family = Family("ranker-mlp")
    for n, version in enumerate(versions):
        family.stage(version_dir(tmp_path, version), footprint, float(n))
    return family


def test_canary_assignment_is_sticky_and_has_the_configured_share() -> None:
    """Over 40,000 users a 10% canary takes its share within five standard deviations; every user keeps their side
    on every call; another salt draws another set of users."""
    users = range(1, 40_001)
    chosen = [u for u in users if in_canary("salt-a", u, 0.1)]
    n, p = len(users), 0.1
    assert abs(len(chosen) - n * p) <= 5 * (n * p * (1 - p)) ** 0.5
    assert chosen == [u for u in users if in_canary("salt-a", u, 0.1)]
    other = {u for u in users if in_canary("salt-b", u, 0.1)}
    assert len(other & set(chosen)) < 0.2 * len(chosen)  # independent draws overlap by about the share itself


def test_the_first_version_becomes_primary_and_the_rest_are_staged(tmp_path) -> None:
    """Staging records the manifest's metrics, sequence and space; the family's first version is its primary."""
    family = family_of(tmp_path, "1", "2")
    assert family.primary == "1" and family.versions["2"].state == "staged"
    assert family.versions["2"].offline_metrics == {"ndcg20": 0.1}
    assert family.versions["2"].trained_to_sequence == 42 and family.versions["2"].space == 1


def test_shadow_canary_promote_and_rollback_move_versions_between_states(tmp_path) -> None:
    """staged -> shadow -> canary -> primary (the old primary retired); a rollback with no canary brings the old
    primary back and retires the new one, saying why."""
    family = family_of(tmp_path, "1", "2", "3")
    family.shadow_version("2", 10.0)
    assert family.shadow == "2"
    family.canary_version("2", 0.2, 11.0)
    assert family.canary == "2" and family.shadow is None and family.canary_share == 0.2
    family.shadow_version("3", 12.0)
    family.promote("2", 13.0)
    assert family.primary == "2" and family.versions["1"].state == "retired" and family.shadow == "3"
    assert family.rollback(14.0, "bad numbers") == "primary 2 rolled back to 1"
    assert family.primary == "1" and family.versions["2"].state == "retired"
    assert "rolled back: bad numbers" in family.versions["2"].last_change


def test_a_canary_rollback_retires_the_canary_only(tmp_path) -> None:
    family = family_of(tmp_path, "1", "2")
    family.canary_version("2", 0.1, 5.0)
    assert family.rollback(6.0, "guardrail") == "canary 2 rolled back"
    assert family.primary == "1" and family.canary is None and family.versions["2"].state == "retired"


def test_the_memory_budget_refuses_a_version_that_does_not_fit(tmp_path) -> None:
    """With room for one version only, a canary or shadow is refused with RESOURCE_EXHAUSTED, and nothing moves."""
    family = family_of(tmp_path, "1", "2", footprint=600 << 20)
    family.memory_budget_bytes = 1 << 30
    for change in (lambda: family.canary_version("2", 0.1, 1.0), lambda: family.shadow_version("2", 1.0),
                   lambda: family.promote("2", 1.0)):
        with pytest.raises(ResourceExhausted, match="over the memory budget of 1024 MiB"):
            change()
    assert family.primary == "1" and family.versions["2"].state == "staged"


def test_a_version_of_another_space_cannot_run_beside_the_primary(tmp_path) -> None:
    family = Family("ranker-mlp")
    family.stage(version_dir(tmp_path, "1", space=1), 0, 0.0)
    family.stage(version_dir(tmp_path, "2", space=2), 0, 0.0)
    with pytest.raises(FailedPrecondition, match="learned space 2"):
        family.canary_version("2", 0.1, 1.0)


def test_unknown_versions_and_families_are_named(tmp_path, store: Store) -> None:
    family = family_of(tmp_path, "1")
    with pytest.raises(NotFound, match="no version '9'"):
        family.promote("9", 1.0)
    with pytest.raises(NotFound, match="no model family 'nope'"):
        store.registry().family("nope")


def stage(tmp_path: Path, version: str, at: float = 1.0):
    """A change that stages `version` (exported under tmp_path) in the ranker-mlp family."""
    return lambda registry: registry.families.setdefault("ranker-mlp", Family("ranker-mlp")).stage(
        version_dir(tmp_path / "v", version) if not (tmp_path / "v" / version).exists() else tmp_path / "v" / version,
        1 << 20, at)


def test_the_store_keeps_every_field_and_each_change_with_its_reason(tmp_path, store: Store) -> None:
    """What a change writes is what the next read gives back, field by field (states, share, salt, sample, budget,
    guardrails, metrics, history with reasons); each change takes one catalog sequence number."""
    for n, version in enumerate(("1", "2", "3")):
        store.change_registry(stage(tmp_path, version, float(n)))
    before = store.sequence()

    def configure(registry: Registry) -> None:
        family = registry.family("ranker-mlp")
        family.canary_version("2", 0.25, 10.0, why="try it")
        family.shadow_version("3", 11.0, sample=0.3)
        family.memory_budget_bytes = 123 << 20
        family.guardrails.min_feeds = 7

    written, _ = store.change_registry(configure)
    assert written.revision == store.sequence() == before + 1 == store.registry_sequence()
    read = store.registry()
    assert read == written
    family = read.family("ranker-mlp")
    assert (family.primary, family.canary, family.shadow) == ("1", "2", "3")
    assert family.canary_share == 0.25 and family.shadow_share == 0.3 and family.canary_since == 10.0
    assert family.memory_budget_bytes == 123 << 20 and family.guardrails.min_feeds == 7
    assert family.versions["2"].offline_metrics == {"ndcg20": 0.1} and family.versions["2"].trained_to_sequence == 42
    assert [(h["from"], h["to"], h["why"]) for h in family.versions["2"].history] == [
        ("", "staged", "operator"), ("staged", "canary", "try it")]


def test_a_change_that_raises_writes_nothing(tmp_path, store: Store) -> None:
    """A refused change (over the memory budget) leaves the rows and the sequence as they were."""
    store.change_registry(stage(tmp_path, "1"))
    store.change_registry(stage(tmp_path, "2"))
    before, sequence = store.registry(), store.sequence()

    def squeeze_and_canary(registry: Registry) -> None:
        family = registry.family("ranker-mlp")
        family.memory_budget_bytes = 1
        family.canary_version("2", 0.1, 5.0)

    with pytest.raises(ResourceExhausted):
        store.change_registry(squeeze_and_canary)
    assert store.registry() == before and store.sequence() == sequence


def test_a_change_that_changes_nothing_takes_no_sequence_number(tmp_path, store: Store) -> None:
    store.change_registry(stage(tmp_path, "1"))
    sequence = store.sequence()
    registry, _ = store.change_registry(lambda registry: registry.family("ranker-mlp").promote("1", 9.0))
    assert store.sequence() == sequence == registry.revision


def test_concurrent_writers_on_two_connections_take_turns_and_lose_nothing(tmp_path, store_url: str) -> None:
    """Two threads, each with its own connection to the store, stage 20 versions each: all 40 are there, and
    every change took its own sequence number."""
    for n in range(40):
        version_dir(tmp_path / "v", str(n))
    opened = [open_store(store_url), open_store(store_url)]

    def writer(own: Store, versions: range) -> None:
        for n in versions:
            own.change_registry(stage(tmp_path, str(n), float(n)))

    try:
        threads = [threading.Thread(target=writer, args=(own, range(a, a + 20))) for own, a in zip(opened, (0, 20))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        registry = opened[0].registry()
        assert len(registry.family("ranker-mlp").versions) == 40
        assert registry.revision == opened[1].sequence() == 40
    finally:
        for own in opened:
            own.close()


def test_the_watcher_hands_on_each_change_made_through_another_connection(tmp_path, store_url: str) -> None:
    """The watcher calls back at start and after a change written by another process's connection, and not when
    nothing changed."""
    ours, theirs = open_store(store_url), open_store(store_url)
    try:
        seen: list[int] = []
        watcher = RegistryWatcher(ours, lambda registry: seen.append(registry.revision))
        assert seen == [0] and not watcher.check()
        written, _ = theirs.change_registry(stage(tmp_path, "1"))
        assert watcher.check() and seen == [0, written.revision]
        assert not watcher.check()
    finally:
        ours.close()
        theirs.close()


def test_an_old_routing_file_is_imported_once_and_renamed(tmp_path, store_url: str) -> None:
    """`feedserve up` on a home from before the registry moved into the store: the file's families become the
    registry's, with their history, and the file is renamed; a store that has a registry keeps its own."""
    from catalog.registry import legacy_routing_path
    from cli.stack import import_legacy_routing

    family = family_of(tmp_path, "1", "2")
    family.canary_version("2", 0.2, 5.0, why="before the move")
    path = legacy_routing_path(tmp_path / "home")
    path.parent.mkdir(parents=True)
    path.write_text(Registry({"ranker-mlp": family}, 3).to_json())
    import_legacy_routing(store_url, tmp_path / "home")
    store = open_store(store_url)
    try:
        imported = store.registry().family("ranker-mlp")
        assert (imported.primary, imported.canary, imported.salt) == ("1", "2", family.salt)
        assert imported.versions["2"].history[-1]["why"] == "before the move"
        assert not path.exists() and path.with_name("routing.json.imported").exists()
        path.write_text(Registry({"other": Family("other")}).to_json())
        import_legacy_routing(store_url, tmp_path / "home")
        assert set(store.registry().families) == {"ranker-mlp"}
    finally:
        store.close()
