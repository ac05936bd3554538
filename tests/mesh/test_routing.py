"""Model routing as configuration: states and their changes, sticky canary shares, the memory budget, the file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from errors import FailedPrecondition, NotFound, ResourceExhausted
from mesh.routing import Family, RoutingWatcher, in_canary, load_routing, update_routing


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


def test_unknown_versions_and_families_are_named(tmp_path) -> None:
    family = family_of(tmp_path, "1")
    with pytest.raises(NotFound, match="no version '9'"):
        family.promote("9", 1.0)
    with pytest.raises(NotFound, match="no model family 'nope'"):
        load_routing(tmp_path / "routing.json").family("nope")


def test_concurrent_writers_take_turns_and_lose_nothing(tmp_path) -> None:
    """Two threads each stage 20 versions through the locked read-change-write: all 40 are there."""
    path = tmp_path / "routing.json"
    for n in range(40):
        version_dir(tmp_path / "v", str(n))

    def writer(versions: range) -> None:
        for n in versions:
            update_routing(path, lambda r, n=n: r.families.setdefault("ranker-mlp", Family("ranker-mlp")).stage(
                tmp_path / "v" / str(n), 0, float(n)))

    threads = [threading.Thread(target=writer, args=(range(a, a + 20),)) for a in (0, 20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    routing = load_routing(path)
    assert routing.revision == 40 and len(routing.family("ranker-mlp").versions) == 40


def test_the_watcher_reads_each_written_routing(tmp_path) -> None:
    """The watcher calls back at start and after a write, and not when nothing changed."""
    path = tmp_path / "routing.json"
    seen = []
    watcher = RoutingWatcher(path, lambda routing: seen.append(routing.revision))
    assert seen == [0] and not watcher.check()
    update_routing(path, lambda r: r.families.setdefault("ranker-mlp", Family("ranker-mlp")))
    assert watcher.check() and seen == [0, 1]
    assert not watcher.check()
