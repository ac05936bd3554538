"""Generation tiers through the model registry: a new tier version is staged, canaried (the canary's users are
answered by it), promoted and rolled back, by the registry in the store alone."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

from catalog import open_store
from engines.base import load_manifest, write_manifest
from feedserve.v1 import generator_pb2
from generator.pipeline import Pipeline, RouterConfig
from generator.registry import model_specs
from generator.residency import ResidencyPool
from generator.rollout import TierRouting
from generator.service import Generator


def _second_version(generation_home: Path, tmp_path: Path) -> Path:
    """The small tier exported again as version 2 (same weights: what is pinned is who answers, not how well)."""
    source = model_specs(generation_home)["small"].graph.parent
    target = tmp_path / "small-v2"
    shutil.copytree(source, target)
    write_manifest(dataclasses.replace(load_manifest(target), version="2", directory=target))
    return target


async def _models_used(core: Generator, user: int) -> list[str]:
    request = generator_pb2.GenerateRequest(prompt="a short post about travel", user_id=user, max_tokens=8,
                                            model="small")
    final = [chunk async for chunk in core.generate(request, None) if chunk.final][0]
    return list(final.usage.models)


def test_a_tier_version_is_staged_canaried_promoted_and_rolled_back_by_routing(generation_home, tmp_path) -> None:
    """The generator registers its tiers as primaries; a canary of small v2 answers its share of users (usage names
    `small@2`), the others stay on `small`; once promoted it answers everyone; a rollback brings `small` back."""
    store = open_store(tmp_path / "catalog.db")
    pool = ResidencyPool(model_specs(generation_home), 1 << 30)
    tiers = TierRouting(pool, store)
    core = Generator(Pipeline(pool), ("travel",), tiers=tiers)
    registry = store.registry()
    assert registry.family("small").primary == "1" and registry.family("large").primary == "1"
    base = RouterConfig()
    assert tiers.router_for(7, base) == base

    directory = _second_version(generation_home, tmp_path)
    store.upload_version(directory)
    store.change_registry(lambda r: (r.family("small").stage(directory, 0, 1.0),
                                    r.family("small").canary_version("2", 0.5, 2.0)))
    assert tiers.watcher.check()
    family = store.registry().family("small")
    users = range(1, 41)
    expected = {u: "small@2" if family.route(u) == "2" else "small" for u in users}
    assert {tiers.router_for(u, base).small for u in users} == {"small", "small@2"}
    assert all(tiers.router_for(u, base).small == expected[u] for u in users)
    canary_user = next(u for u in users if expected[u] == "small@2")
    primary_user = next(u for u in users if expected[u] == "small")

    async def both() -> tuple[list[str], list[str]]:  # one event loop: the pool's locks belong to it
        return await _models_used(core, canary_user), await _models_used(core, primary_user)

    assert asyncio.run(both()) == (["small@2"], ["small"])

    store.change_registry(lambda r: r.family("small").promote("2", 3.0))
    assert tiers.watcher.check()
    assert {tiers.router_for(u, base).small for u in users} == {"small@2"}
    store.change_registry(lambda r: r.family("small").rollback(4.0, "test"))
    assert tiers.watcher.check()
    assert {tiers.router_for(u, base).small for u in users} == {"small"}
    assert tiers.router_for(canary_user, base).large == "large"


def test_the_imported_model_is_a_version_of_the_large_tier_and_an_old_primary_keeps_serving(
        generation_home, real_specs, tmp_path) -> None:
    """A generator started with SmolLM2 as its large tier registers it in the `large` family as `smollm2/1`; on a
    routing whose `large` already had a primary (the trained tier), SmolLM2 is staged beside it and the routing's
    primary keeps serving until an operator promotes SmolLM2, which then answers without a restart."""
    store = open_store(tmp_path / "catalog.db")
    TierRouting(ResidencyPool(model_specs(generation_home), 1 << 30), store).stop()  # a home that served the toy tier
    pool = ResidencyPool(dict(real_specs), 1 << 30)
    tiers = TierRouting(pool, store)
    family = store.registry().family("large")
    assert family.primary == "1" and family.versions["smollm2/1"].state == "staged"
    base = RouterConfig()
    assert tiers.router_for(3, base).large == "large@1"  # the toy tier, as the routing says
    store.change_registry(lambda r: r.family("large").promote("smollm2/1", 5.0))
    assert tiers.watcher.check()
    assert tiers.router_for(3, base).large == "large"  # the pool's name for the version this generator started on
