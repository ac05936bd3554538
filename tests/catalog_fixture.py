"""The test catalog: the simulator's small world written as import files, imported into a real store, encoded with
the real sentence encoder, with each user's vector replayed from their history (what a first run seeds)."""

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
from ranker.training import MODEL_NAME, fit_and_export, history_vectors, load_catalog
from world import World
from world.export import IMPORT_MAPPING, SCHEMA, export_world

__all__ = ["TestCatalog", "build_catalog", "train_model"]


@dataclass
class TestCatalog:
    """A filled store (never written by tests: `copy` gives a writable one) and what tests assert against."""

    path: Path
    schema: Schema
    item_vectors: np.ndarray  # [items, DIM], row = id - 1
    user_ids: np.ndarray  # users with a vector after their history
    user_vectors: np.ndarray
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
    import_into(store, plan_for(None, None, paths, IMPORT_MAPPING, schema), schema)
    encoder = SentenceEncoder(ensure_encoder(encoder_home), threads=2)
    ContentEncoder(store, encoder.encode_batch).drain()
    loaded = load_catalog(store, schema, DIM)
    ids, vectors = history_vectors(loaded)
    store.close()
    return TestCatalog(directory / "catalog.db", schema, loaded.items.vectors[:loaded.items.size].copy(), ids, vectors)


def train_model(catalog: TestCatalog, root: Path) -> ModelManifest:
    store = open_store(catalog.path)
    try:
        return fit_and_export(store, catalog.schema, root / MODEL_NAME, catalog.dim, max_examples=8_000,
                              require_better=False)
    finally:
        store.close()
