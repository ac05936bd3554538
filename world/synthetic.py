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

from mesh.progress import Progress

__all__ = ["WorldSpec", "World", "ensure_world", "load_world", "CATEGORIES"]

FORMAT_VERSION = 4
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
DEVICES = ("phone", "tablet", "desktop", "tv")
SURFACES = ("home", "explore", "search", "notification")
ATTRIBUTE_CARDINALITY = 5_000  # item author/region and user country/language/age/cohort codes
# impressions a user came to through their own tastes (an item of a favourite category, by its popularity there);
# the rest are what is popular overall. Shared tastes are then what a collaborative learner finds in the logs: with
# impressions by popularity alone, the first-run model scored 0.0099 NDCG@20, barely above noise; on the per-user
# split of the default world, plain ALS against popularity was 1.9x with 0.8 of impressions by taste, 2.3x with 0.9
TASTE_SHARE = 0.9


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
    def item_attributes(self) -> np.ndarray:
        """int32 [N, 4]: adjective, noun, author and region codes (hashed into features by the ranker)."""
        return self._array("item_attributes")

    @cached_property
    def user_attributes(self) -> np.ndarray:
        """int32 [U, 4]: country, language, age band and signup cohort codes."""
        return self._array("user_attributes")

    @cached_property
    def category_centroids(self) -> np.ndarray:
        return self._array("category_centroids")

    @cached_property
    def titles(self) -> list[str]:
        return (self.path / "item_titles.txt").read_text().split("\n")

    @cached_property
    def interactions(self) -> dict[str, np.ndarray]:
        """Simulated logs, time-ordered: user, item, event (EventType), timestamp, hour, device, surface,
        and one label per objective: click, like, share, dwell (1 = positive); dwell_s in seconds."""
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
        # mostly its category: what its text says
        embeddings[chunk] = _unit(centroids[category[chunk]] + 0.25 * noise / np.sqrt(spec.dim) * 4)
        progress.advance(note="items")
    popularity = (1e4 / rng.permutation(np.arange(1, spec.items + 1)) ** 0.8).astype(np.float32)
    published = (now - rng.exponential(15 * 86400, spec.items).clip(0, 90 * 86400)).astype(np.int64)
    adjectives = rng.integers(0, len(_ADJECTIVES), spec.items)
    nouns = rng.integers(0, len(_NOUNS), spec.items)
    item_attributes = np.stack(
        [adjectives, nouns, rng.integers(0, ATTRIBUTE_CARDINALITY, spec.items), rng.integers(0, 64, spec.items)], axis=1
    ).astype(np.int32)
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
    user_attributes = np.stack(
        [rng.integers(0, 64, spec.users), rng.integers(0, 16, spec.users), rng.integers(0, 8, spec.users),
         rng.integers(0, 48, spec.users)], axis=1
    ).astype(np.int32)
    progress.advance(note="users")

    # Interactions: impressions mostly from the user's favourite categories, the rest by popularity; engagement
    # follows taste, freshness and popularity.
    n = spec.interactions
    users = rng.integers(0, spec.users, n)
    items = rng.choice(spec.items, n, p=popularity / popularity.sum())
    tasteful = np.flatnonzero(rng.random(n) < TASTE_SHARE)
    pick = (rng.random(len(tasteful))[:, None] > np.cumsum(weights[users[tasteful]], axis=1)[:, :2]).sum(axis=1)
    chosen = favourites[users[tasteful], pick]
    members = np.argsort(category, kind="stable")
    bounds = np.searchsorted(category[members], np.arange(len(CATEGORIES) + 1))
    for c in range(len(CATEGORIES)):
        among, within = members[bounds[c]:bounds[c + 1]], tasteful[chosen == c]
        if len(among) and len(within):
            cumulative = np.cumsum(popularity[among], dtype=np.float64)
            at = np.searchsorted(cumulative, rng.random(len(within)) * cumulative[-1], side="right")
            items[within] = among[np.minimum(at, len(among) - 1)]
    affinity = np.einsum("nd,nd->n", tastes[users], embeddings[items])
    age_days = (now - published[items]) / 86400
    hour = rng.integers(0, 24, n)
    device = rng.choice(len(DEVICES), n, p=[0.6, 0.15, 0.2, 0.05])
    surface = rng.choice(len(SURFACES), n, p=[0.5, 0.25, 0.15, 0.1])
    evening = ((hour >= 18) | (hour <= 1)).astype(np.float64)
    logit = 5.0 * affinity - 2.0 + 0.8 * np.exp(-age_days / 7) + 0.15 * np.log1p(popularity[items]) + 0.2 * evening
    click = rng.random(n) < 1 / (1 + np.exp(-logit))
    like = click & (rng.random(n) < 1 / (1 + np.exp(-(6.0 * affinity - 2.5))))
    share = like & (rng.random(n) < 0.25 + 0.2 * (device == 0))
    dwell_s = np.where(click, rng.exponential(20 + 60 * np.clip(affinity, 0, None)), rng.exponential(2, n))
    dwell = dwell_s > 30
    event = np.where(share, _SIM_EVENTS[2], np.where(like, _SIM_EVENTS[1], np.where(click, _SIM_EVENTS[0], _SIM_EVENTS[3])))
    stamps = np.sort(now - rng.integers(0, 30 * 86400, n))
    progress.advance(note="interactions")

    np.save(out / "item_embeddings.npy", embeddings)
    np.save(out / "item_category.npy", category)
    np.save(out / "item_published.npy", published)
    np.save(out / "item_popularity.npy", popularity)
    np.save(out / "user_tastes.npy", tastes)
    np.save(out / "item_attributes.npy", item_attributes)
    np.save(out / "user_attributes.npy", user_attributes)
    np.save(out / "category_centroids.npy", centroids)
    (out / "item_titles.txt").write_text("\n".join(titles))
    np.savez(
        out / "interactions.npz",
        user=(users + 1).astype(np.int64),
        item=(items + 1).astype(np.int64),
        event=event.astype(np.int8),
        timestamp=stamps.astype(np.int64),
        hour=hour.astype(np.int8),
        device=device.astype(np.int8),
        surface=surface.astype(np.int8),
        click=click.astype(np.int8),
        like=like.astype(np.int8),
        share=share.astype(np.int8),
        dwell=dwell.astype(np.int8),
        dwell_s=dwell_s.astype(np.float32),
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
