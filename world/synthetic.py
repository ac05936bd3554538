"""The synthetic world: items with embeddings, categories, publish times and titles; users with tastes."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from world.progress import Progress

__all__ = ["WorldSpec", "World", "ensure_world", "load_world", "CATEGORIES"]

FORMAT_VERSION = 1
DIM = 64
CATEGORIES = (
    "tech", "science", "sports", "music", "film", "travel", "food", "fashion",
    "finance", "health", "gaming", "art", "books", "politics", "nature", "cars",
    "design", "history", "comedy", "pets", "space", "fitness", "parenting", "diy",
    "photography", "architecture", "education", "crypto", "climate", "startups", "theatre", "poetry",
)
_ADJECTIVES = (
    "quiet", "bold", "hidden", "modern", "tiny", "endless", "golden", "strange", "simple", "wild",
    "honest", "rapid", "forgotten", "bright", "curious", "ancient", "clever", "gentle", "urgent", "vivid",
)
_NOUNS = (
    "guide", "story", "secrets", "lessons", "notes", "review", "ideas", "map", "diary", "questions",
    "mistakes", "habits", "tricks", "history", "future", "debate", "numbers", "moments", "rules", "myths",
)
# Interactions the simulator emits, as EventType values of feedserve.v1 (click, like, share, skip).
_SIM_EVENTS = np.array([2, 3, 4, 6], dtype=np.int8)


@dataclass(frozen=True)
class WorldSpec:
    """The size and seed of a world; two equal specs build identical worlds."""

    items: int = 200_000
    users: int = 50_000
    dim: int = DIM
    seed: int = 7
    interactions: int = 400_000

    @property
    def dirname(self) -> str:
        return f"world-v{FORMAT_VERSION}-{self.items}i-{self.users}u-{self.dim}d-s{self.seed}"


class World:
    """A built world on disk; arrays are memory-mapped read-only and loaded on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        meta = json.loads((path / "world.json").read_text())
        self.spec = WorldSpec(**meta["spec"])
        self.now = int(meta["now"])  # the world's "present", seconds since the epoch

    def _array(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", mmap_mode="r")

    @cached_property
    def item_embeddings(self) -> np.ndarray:
        return self._array("item_embeddings")

    @cached_property
    def item_category(self) -> np.ndarray:
        return self._array("item_category")

    @cached_property
    def item_published(self) -> np.ndarray:
        return self._array("item_published")

    @cached_property
    def item_popularity(self) -> np.ndarray:
        return self._array("item_popularity")

    @cached_property
    def user_tastes(self) -> np.ndarray:
        return self._array("user_tastes")

    @cached_property
    def titles(self) -> list[str]:
        return (self.path / "item_titles.txt").read_text().split("\n")

    @cached_property
    def interactions(self) -> dict[str, np.ndarray]:
        """Simulated logs: user, item, event (EventType), timestamp, label (1 = positive)."""
        with np.load(self.path / "interactions.npz") as logs:
            return {k: logs[k] for k in logs.files}

    # Ids are 1-based so that 0 stays "missing" in proto3 messages.
    @property
    def item_ids(self) -> np.ndarray:
        return np.arange(1, self.spec.items + 1, dtype=np.int64)

    @property
    def user_ids(self) -> np.ndarray:
        return np.arange(1, self.spec.users + 1, dtype=np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _build(spec: WorldSpec, out: Path, progress: Progress) -> None:
    rng = np.random.default_rng(spec.seed)
    now = int(time.time())
    centroids = _unit(rng.standard_normal((len(CATEGORIES), spec.dim)))
    progress.advance(note="categories")

    # Items: a category centroid plus noise; Zipf popularity; publish times over 90 days.
    category = rng.integers(0, len(CATEGORIES), spec.items).astype(np.int16)
    embeddings = np.empty((spec.items, spec.dim), dtype=np.float32)
    chunks = np.array_split(np.arange(spec.items), 8)
    for chunk in chunks:
        noise = rng.standard_normal((len(chunk), spec.dim)).astype(np.float32)
        embeddings[chunk] = _unit(centroids[category[chunk]] + 0.6 * noise / np.sqrt(spec.dim) * 4)
        progress.advance(note="items")
    popularity = (1e4 / rng.permutation(np.arange(1, spec.items + 1)) ** 0.8).astype(np.float32)
    published = (now - rng.exponential(15 * 86400, spec.items).clip(0, 90 * 86400)).astype(np.int64)
    adjectives = rng.integers(0, len(_ADJECTIVES), spec.items)
    nouns = rng.integers(0, len(_NOUNS), spec.items)
    titles = [
        f"The {_ADJECTIVES[a]} {_NOUNS[n]} of {CATEGORIES[c]} #{i + 1}"
        for i, (a, n, c) in enumerate(zip(adjectives, nouns, category))
    ]
    progress.advance(note="titles")

    # Users: a mix of one to three favourite categories.
    favourites = rng.integers(0, len(CATEGORIES), (spec.users, 3))
    weights = rng.dirichlet(np.ones(3) * 0.7, spec.users).astype(np.float32)
    tastes = np.einsum("uk,ukd->ud", weights, centroids[favourites])
    tastes = _unit(tastes + 0.3 * rng.standard_normal(tastes.shape).astype(np.float32) / np.sqrt(spec.dim) * 4)
    progress.advance(note="users")

    # Interactions: impressions drawn by popularity; engagement follows taste, freshness and popularity.
    n = spec.interactions
    users = rng.integers(0, spec.users, n)
    items = rng.choice(spec.items, n, p=popularity / popularity.sum())
    affinity = np.einsum("nd,nd->n", tastes[users], embeddings[items])
    age_days = (now - published[items]) / 86400
    logit = 5.0 * affinity - 2.0 + 0.8 * np.exp(-age_days / 7) + 0.15 * np.log1p(popularity[items])
    label = rng.random(n) < 1 / (1 + np.exp(-logit))
    event = np.where(label, rng.choice(_SIM_EVENTS[:3], n, p=[0.7, 0.2, 0.1]), _SIM_EVENTS[3])
    stamps = np.sort(now - rng.integers(0, 30 * 86400, n))
    progress.advance(note="interactions")

    np.save(out / "item_embeddings.npy", embeddings)
    np.save(out / "item_category.npy", category)
    np.save(out / "item_published.npy", published)
    np.save(out / "item_popularity.npy", popularity)
    np.save(out / "user_tastes.npy", tastes)
    (out / "item_titles.txt").write_text("\n".join(titles))
    np.savez(
        out / "interactions.npz",
        user=(users + 1).astype(np.int64),
        item=(items + 1).astype(np.int64),
        event=event.astype(np.int8),
        timestamp=stamps.astype(np.int64),
        label=label.astype(np.int8),
    )
    meta = {"spec": asdict(spec), "now": now, "categories": list(CATEGORIES), "format": FORMAT_VERSION}
    (out / "world.json").write_text(json.dumps(meta, indent=1))
    progress.advance(note="saved")


def ensure_world(spec: WorldSpec, home: Path, quiet: bool = False) -> World:
    """Load the world for `spec` from `home`, building it first (with a progress bar) if missing."""
    path = home / spec.dirname
    if (path / "world.json").exists():
        return World(path)
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".{spec.dirname}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    progress = Progress(
        f"building world ({spec.items:,} items, {spec.users:,} users)",
        total=13,
        stream=open(os.devnull, "w") if quiet else None,
    )
    try:
        _build(spec, staging, progress)
        try:
            staging.rename(path)  # atomic: readers see a whole world or none
        except OSError:
            if not (path / "world.json").exists():  # lost a race to another builder is fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return World(path)


def load_world(path: Path) -> World:
    """Open an already built world directory."""
    if not (path / "world.json").exists():
        raise FileNotFoundError(f"world path {path} holds no world.json; run `feedserve up` to build it")
    return World(path)
