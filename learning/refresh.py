"""A new ranker version over the learned space the store already serves (`feedserve train --keep-space`): the user
and item vectors stay, only the ranking model is trained again on the latest events, so that the version can run
beside the primary as its shadow or canary."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import TextIO

import numpy as np

from catalog import Schema, Store
from engines import ModelManifest
from engines.base import load_manifest
from learning.examples import ranker_examples
from learning.training import (
    VALIDATION_SHARE,
    Catalog,
    TrainingError,
    export,
    fit_ranker,
    fit_transitions,
    load_catalog,
    newest_model,
    next_version,
)
from learning.vectors import AlsParams, LearnedVectors, interactions, per_user_holdout, unit
from ranker import graphs
from ranker.transitions import FILE as TRANSITIONS_FILE
from ranker.transitions import Transitions

__all__ = ["export_shuffled", "served_space", "train_on_served_space"]


def served_space(store: Store, catalog: Catalog) -> LearnedVectors:
    """The served space as training reads it: learned items (others placed by their content, as the store places
    them), learned users, and the cold-start vector (the learned users' mean direction)."""
    space = store.active_space()
    if not space:
        raise TrainingError(f"{store.name} serves no learned space yet: run `feedserve train`, then `feedserve up`")
    size, dim = catalog.items.size, catalog.items.space.dim
    projection = store.projection(space)
    item_ids, item_vectors = store.learned_items(space)
    items = (catalog.items.content[:size] @ projection).astype(np.float32)
    known = np.zeros(size, bool)
    inside = item_ids <= size
    items[item_ids[inside] - 1] = item_vectors[inside]
    known[item_ids[inside] - 1] = True
    user_ids, user_vectors = store.learned_users(space)
    users = np.zeros((catalog.user_rows, dim), np.float32)
    users_known = np.zeros(catalog.user_rows, bool)
    inside = user_ids < catalog.user_rows
    users[user_ids[inside]] = user_vectors[inside]
    users_known[user_ids[inside]] = True
    cold = unit(users[users_known].mean(axis=0)) if users_known.any() else np.zeros(dim, np.float32)
    return LearnedVectors(items, known, users, users_known, projection, cold, AlsParams(0, 0.0, 0.0, 0), 1.0)


def train_on_served_space(store: Store, schema: Schema, root: Path, dim: int, epochs: int = 4, seed: int = 1,
                          stream: TextIO | None = None) -> ModelManifest:
    """Train the ranker again over the served space, on each user's latest events, and export it as the next
    version naming that space. Its offline figure is the validation AUC of the click head; the space's vectors have
    seen those events (they were learned on all of them), so it flatters: compare versions online."""
    stream = stream if stream is not None else io.StringIO()
    space = store.active_space()
    base = newest_model(root, space=space)
    if base is None:
        raise TrainingError(f"no version under {root} was trained for the served space {space}")
    try:
        import torch
    except ImportError:
        raise TrainingError("training needs PyTorch: pip install '.[train]'") from None
    torch.manual_seed(seed)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    catalog = load_catalog(store, schema, dim)
    events = catalog.events
    if len(events["user"]) < 100:
        raise TrainingError(f"the event log holds {len(events['user'])} events: at least 100 are needed")
    vectors = served_space(store, catalog)
    rng = np.random.default_rng(seed)
    held = per_user_holdout(events["user"], events["timestamp"], VALIDATION_SHARE)
    fit = interactions(events["user"][~held], events["item"][~held], events["event"][~held],
                       (catalog.user_rows, catalog.items.size))
    examples = ranker_examples(catalog, vectors, np.flatnonzero(held), fit, fit_transitions(catalog, ~held), rng)
    weights = fit_ranker(examples, epochs, 512, rng, stream)
    metrics = {"examples": float(len(examples)), "events": float(len(events["user"])), "seed": float(seed)}
    version = next_version(root)
    staging = root / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    extra = {key: base.extra[key] for key in ("vector_dim", "schema", "space", "cold_start", "vectors") if key in base.extra}
    export(weights, metrics, staging, version, f"{store.name} up to sequence {catalog.sequence} (served space {space})",
           {**extra, "trained_to_sequence": catalog.sequence, "retrained_from": base.version},
           fit_transitions(catalog, np.ones(len(events["user"]), bool)))
    staging.rename(root / version)
    return load_manifest(root / version)


def export_shuffled(base: ModelManifest, root: Path, seed: int = 0) -> ModelManifest:
    """A deliberately broken next version: `base`'s weights with every matrix's entries shuffled (the same shapes,
    scales and learned space, a meaningless ranking). For exercising shadow figures and canary guardrails."""
    rng = np.random.default_rng(seed)
    weights = graphs.weights_of(base.path("naive"))
    w1, b1, w2, b2, w3, b3 = (rng.permutation(a.ravel()).reshape(a.shape)
                              for a in (weights.w1, weights.b1, weights.w2, weights.b2, weights.w3, weights.b3))
    wide = None if weights.wide is None else rng.permutation(weights.wide.ravel()).reshape(weights.wide.shape)
    shuffled = graphs.MlpWeights(w1, b1, w2, b2, w3, b3, wide)
    version = next_version(root)
    staging = root / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    extra = {**base.extra, "retrained_from": base.version, "deliberately_broken": "weights shuffled"}
    saved = base.directory / TRANSITIONS_FILE
    export(shuffled, {"shuffled_seed": float(seed)}, staging, version, f"{base.name}/{base.version}, shuffled", extra,
           Transitions.load(saved) if saved.is_file() else None)
    staging.rename(root / version)
    return load_manifest(root / version)
