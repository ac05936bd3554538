"""The test catalog: the simulator's small world written as import files, imported into a real store, encoded with
the real sentence encoder, its vectors and ranker learned and its space published, with each user's vector as a
first run seeds it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catalog import Schema, open_store, preset_schema
from catalog.encoding import ContentEncoder
from catalog.importers import import_into, plan_for
from engines import ModelManifest
from engines.sentence import DIM, SentenceEncoder, ensure_encoder
from learning.pipeline import fit_and_export
from learning.training import MODEL_NAME, current_user_vectors, load_catalog
from learning.vectors import AlsParams
from world import World
from world.export import IMPORT_MAPPING, SCHEMA, export_world

__all__ = ["TestCatalog", "build_catalog", "FIXTURE_ALS"]

FIXTURE_ALS = [AlsParams(16, 1.0, 5.0, iterations=8)]  # one setting: the fixture need not be tuned, only real


@dataclass
class TestCatalog:
    """A filled store (never written by tests: `copy` gives a writable one) and what tests assert against."""

    path: Path
    schema: Schema
    item_vectors: np.ndarray  # [items, DIM], row = id - 1: served vectors, in the published learned space
    user_ids: np.ndarray  # users with a vector (learned, or by drift)
    user_vectors: np.ndarray
    manifest: ModelManifest  # the model trained on it, whose space is published
    dim: int = DIM

    @property
    def url(self) -> str:
        return str(self.path)

    def copy(self, directory: Path) -> str:
        """A private, writable copy of the store under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "catalog.db"
        with sqlite3.connect(self.path) as source, sqlite3.connect(target) as copy:
            source.backup(copy)  # a consistent copy, WAL included
        return str(target)

    def vector(self, user: int) -> np.ndarray:
        return self.user_vectors[int(np.flatnonzero(self.user_ids == user)[0])]


def build_catalog(world: World, encoder_home: Path, directory: Path) -> TestCatalog:
    schema = preset_schema(SCHEMA)
    paths = export_world(world, directory / "import")
    store = open_store(directory / "catalog.db")
    try:
        import_into(store, plan_for(None, None, paths, IMPORT_MAPPING, schema), schema)
        encoder = SentenceEncoder(ensure_encoder(encoder_home), threads=2)
        ContentEncoder(store, encoder.encode_batch).drain()
        manifest = fit_and_export(store, schema, directory / "models" / MODEL_NAME, DIM, grid=FIXTURE_ALS, epochs=1,
                                  require_better=False, evaluate=False)
        store.publish_space(int(manifest.extra["space"]))
        loaded = load_catalog(store, schema, DIM)
        ids, vectors = current_user_vectors(store, loaded)
    finally:
        store.close()
    return TestCatalog(directory / "catalog.db", schema, loaded.items.vectors[:loaded.items.size].copy(), ids, vectors,
                       manifest)
