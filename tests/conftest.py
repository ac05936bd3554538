"""Shared fixtures: a small synthetic world, its model, and event-loop runners."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from engines import ModelManifest
from ranker.training import ensure_model
from world import World, WorldSpec, ensure_world

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # keep gRPC's GOAWAY chatter out of test output

SMALL = WorldSpec(items=5_000, users=500, interactions=30_000)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return ensure_world(SMALL, tmp_path_factory.mktemp("home"), quiet=True)


@pytest.fixture(scope="session")
def manifest(world: World) -> ModelManifest:
    return ensure_model(world)


Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a coroutine to completion under uvloop (what services use) and under plain asyncio."""
    return uvloop.run if request.param == "uvloop" else asyncio.run
