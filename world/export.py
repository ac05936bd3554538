"""The simulator as a data source: its catalog, users and event log written as import files (Parquet), which
`feedserve import` (or `feedserve up` on first run) reads like any product's data, under the `simulator` schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mesh.progress import working
from world.synthetic import _ADJECTIVES, _NOUNS, CATEGORIES, World

__all__ = ["export_world", "IMPORT_MAPPING", "SCHEMA"]

SCHEMA = "simulator"
# `feedserve import --items ... --users ... --events ...` with these --map pairs reads the files back.
IMPORT_MAPPING = {
    "items.id": "id", "title": "title", "text": "text", "categories": "categories", "published": "published",
    "attr.author": "author", "attr.region": "region", "users.id": "id", "attr.country": "country",
    "attr.language": "language", "attr.age_band": "age_band", "attr.cohort": "cohort",
    "user": "user", "item": "item", "event": "event", "timestamp": "timestamp",
}


def export_world(world: World, out: Path) -> dict[str, Path]:
    """Write items, users and events as Parquet under `out` (once: existing files are kept); returns their paths.

    Titles drop the simulator's running number so that the catalog has the few thousand distinct texts a real
    catalog of templated items would: each distinct text is encoded once."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"{kind}.parquet" for kind in ("items", "users", "events")}
    if all(p.exists() for p in paths.values()):
        return paths
    with working(f"writing the world's items, users and events as import files (Parquet) in {out}"):
        _export(world, paths)
    return paths


def _export(world: World, paths: dict[str, Path]) -> None:
    attributes = np.asarray(world.item_attributes)
    category = np.asarray(world.item_category)
    titles = [f"The {_ADJECTIVES[a]} {_NOUNS[n]} of {CATEGORIES[c]}" for a, n, c in
              zip(attributes[:, 0].tolist(), attributes[:, 1].tolist(), category.tolist())]
    texts = [f"All about {CATEGORIES[c]}: {CATEGORIES[c]} {_NOUNS[n]}, {_ADJECTIVES[a]} and to the point."
             for a, n, c in zip(attributes[:, 0].tolist(), attributes[:, 1].tolist(), category.tolist())]
    _write(paths["items"], {
        "id": [str(i) for i in world.item_ids.tolist()], "title": titles, "text": texts,
        "categories": [[CATEGORIES[c]] for c in category.tolist()],
        "published": np.asarray(world.item_published).astype(np.int64),
        "author": [f"author{a}" for a in attributes[:, 2].tolist()],
        "region": [f"region{r}" for r in attributes[:, 3].tolist()],
    })
    users = np.asarray(world.user_attributes)
    _write(paths["users"], {
        "id": [str(u) for u in world.user_ids.tolist()],
        **{name: [f"{name}{v}" for v in users[:, n].tolist()]
           for n, name in enumerate(("country", "language", "age_band", "cohort"))},
    })
    logs = world.interactions
    _write(paths["events"], {
        "user": logs["user"].astype(str), "item": logs["item"].astype(str),
        "event": logs["event"].astype(np.int64), "timestamp": logs["timestamp"].astype(np.int64),
    })


def _write(path: Path, columns: dict) -> None:
    staging = path.with_suffix(".tmp")
    pq.write_table(pa.table({k: pa.array(v) for k, v in columns.items()}), staging)
    staging.rename(path)  # a reader sees a whole file or none
