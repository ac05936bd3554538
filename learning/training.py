"""Learns user and item vectors and the multi-objective ranker from the store's events; exports them: the space into
the store, the ranker as a versioned set of ONNX graphs.

Training uses PyTorch (the optional `.[train]` extra); serving needs only ONNX Runtime.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import scipy.sparse as sp

from catalog import ChangeFollower, Schema, Store
from catalog.drift import replay_drift
from engines.base import ModelManifest, load_manifest, write_manifest
from learning.examples import PART_STARTS, POSITIVES, Examples, ranker_examples
from learning.sequential import sequences
from learning.vectors import (
    GRID,
    AlsParams,
    LearnedVectors,
    continue_als,
    fit_projection,
    interactions,
    per_user_holdout,
    tune,
    unit,
)
from mesh.progress import Progress, working
from ranker import graphs
from ranker.exported import MODEL_NAME, newest_model, next_version
from ranker.features import CROSS_DIM, FEATURE_DIM, HEADS, FeatureSpace
from ranker.items import ItemTable
from ranker.transitions import FILE as TRANSITIONS_FILE
from ranker.transitions import Transitions

__all__ = ["DEFAULT_HEAD_WEIGHTS", "MIN_EVENTS", "MODEL_NAME", "POSITIVES", "Catalog", "Trained", "TrainingError",
           "active_columns", "check_enough_events", "current_user_vectors", "export", "export_trained",
           "fit_transitions", "load_catalog", "newest_model", "next_version", "train"]

DEFAULT_HEAD_WEIGHTS = {"click": 1.0, "like": 0.5, "dwell": 0.3, "share": 0.2}
GRAPHS = {"naive": "naive.onnx", "decomposed": "decomposed.onnx", "decomposed_int8": "decomposed.int8.onnx",
          "item_tower": "item_tower.onnx"}


class TrainingError(RuntimeError):
    """Training cannot run (missing extra) or produced a model that does not beat the baseline."""


MIN_EVENTS = 100  # an event log smaller than this is refused: too little to train and evaluate on
VALIDATION_SHARE = 0.125  # each user's latest 12.5% of training events: where ALS is tuned and the ranker learns
PLACED_LENGTH = 0.5  # mean length of items placed by their content (learned items: 1)


@dataclass
class Catalog:
    """What training reads from the store: the items coded as the ranker codes them, users' attributes, and the
    event log in time order with the sequence it reaches."""

    items: ItemTable
    users: dict[int, dict]
    events: dict[str, np.ndarray]
    sequence: int

    @property
    def user_rows(self) -> int:
        """Rows a per-user table needs (user ids are dense from 1)."""
        ids = [*self.users, int(self.events["user"].max()) if len(self.events["user"]) else 0]
        return max(ids, default=0) + 1


def load_catalog(store: Store, schema: Schema, dim: int) -> Catalog:
    """Read the whole catalog and event log once, through the same change feed and item coding the ranker uses."""
    items = ItemTable(FeatureSpace(schema, dim))
    follower = ChangeFollower(store, lambda changed, reached: items.apply(changed))
    follower.poll()
    sequence = follower.applied
    events = store.events(until=sequence)
    order = np.argsort(events["timestamp"], kind="stable")  # time order: an import need not be sorted
    events = {k: v[order] for k, v in events.items()}
    users = dict(store.users_changed(0, sequence))
    return Catalog(items, users, events, sequence)


def current_user_vectors(store: Store, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """Every user's vector now in the served space, as the paramserver should hold it: the learned vector of the
    active space, moved by the drift of every event logged after that space was trained (by history's drift
    alone before any space is served). Returns (user ids, vectors)."""
    space = store.active_space()
    start: dict[int, np.ndarray] = {}
    after = 0
    if space:
        ids, vectors = store.learned_users(space)
        start = {int(u): v for u, v in zip(ids.tolist(), vectors)}
        after = store.space_trained_to(space)
    events = catalog.events
    later = np.flatnonzero(events["seq"] > after)
    later = later[np.argsort(events["seq"][later], kind="stable")]  # log order: the order drift was applied live
    users, _ = replay_drift(events["user"][later], events["item"][later], events["event"][later],
                            catalog.items.vectors[:catalog.items.size], start=start)
    ids = np.array(sorted(users), np.int64)
    vectors = np.stack([users[int(u)] for u in ids]) if len(ids) else np.zeros((0, catalog.items.space.dim), np.float32)
    return ids, vectors


@dataclass
class Trained:
    """A trained model: the ranker's weights, the learned space, and what training measured."""

    weights: graphs.MlpWeights
    vectors: LearnedVectors
    transitions: Transitions
    metrics: dict[str, float]


def _pad(vectors: np.ndarray, dim: int) -> np.ndarray:
    out = np.zeros((len(vectors), dim), np.float32)
    out[:, :vectors.shape[1]] = vectors
    return out


def _space(catalog: Catalog, users: np.ndarray, items: np.ndarray, matrix: sp.csr_matrix, scale: float,
           params: AlsParams) -> LearnedVectors:
    """Factors -> a served space: items scaled (mean length 1, so that drift's 10% means 10%), users of unit
    length, both padded to the served width; items with no positive get their content's projection."""
    dim, size = catalog.items.space.dim, catalog.items.size
    known = np.diff(matrix.tocsc().indptr) > 0
    item_vectors = _pad(items * scale, dim)
    content = catalog.items.content[:size]
    projection = np.zeros((dim, dim), np.float32)
    if known.any():
        projection[:, :items.shape[1]] = fit_projection(content[known], items[known] * scale)
        # ridge shrinks what content cannot tell apart toward zero, and inner-product retrieval never finds a faint
        # vector: scale placed items to PLACED_LENGTH on average, short of learned ones (mean 1) but findable
        placed = float(np.linalg.norm(content[known] @ projection, axis=1).mean())
        if placed > 0:
            projection *= PLACED_LENGTH / placed
    item_vectors[~known] = content[~known] @ projection  # as the store places them
    users_known = np.diff(matrix.indptr) > 0
    user_vectors = _pad(unit(users), dim)
    user_vectors[~users_known] = 0
    cold = unit(user_vectors[users_known].mean(axis=0)) if users_known.any() else np.zeros(dim, np.float32)
    return LearnedVectors(item_vectors, known, user_vectors, users_known, projection, cold, params, scale)


def fit_transitions(catalog: Catalog, events: np.ndarray) -> Transitions:
    """What follows what in the positive sequences of the events selected by the mask `events`."""
    log = catalog.events
    chosen = events & np.isin(log["event"], POSITIVES["click"])
    return Transitions.fit(sequences(log["user"][chosen], log["item"][chosen], log["timestamp"][chosen],
                                     np.ones(int(chosen.sum()), bool)).values(), catalog.items.size)


def _WideDeep(torch):
    class WideDeep(torch.nn.Module):
        """The MLP over all 4,736 features, plus a linear wide part over the 128 cross features, into the heads."""

        def __init__(self) -> None:
            super().__init__()
            dims = (FEATURE_DIM, *graphs.HIDDEN, len(HEADS))
            self.deep = torch.nn.Sequential(
                torch.nn.Linear(dims[0], dims[1]), torch.nn.ReLU(),
                torch.nn.Linear(dims[1], dims[2]), torch.nn.ReLU(),
                torch.nn.Linear(dims[2], dims[3]),
            )
            self.wide = torch.nn.Linear(CROSS_DIM, len(HEADS), bias=False)

        def forward(self, x):
            return self.deep(x) + self.wide(x[:, FEATURE_DIM - CROSS_DIM:])

        def weights(self) -> graphs.MlpWeights:
            layers = [m for m in self.deep if isinstance(m, torch.nn.Linear)]
            return graphs.MlpWeights.from_layers(
                [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()) for layer in layers],
                self.wide.weight.detach().numpy().T.copy())

    return WideDeep()


MIN_STEPS = 300  # small logs get smaller batches rather than too few optimiser steps
_SCAN = 4_096  # examples per block when finding the columns they set


def active_columns(examples: Examples, stream: TextIO | None = None) -> np.ndarray:
    """The feature columns any example sets (sorted): on MovieLens about 1,300 of the 4,736 (the rest are hashed
    buckets no value of this catalog falls in, and the context's unused fields)."""
    n = len(examples)
    seen = np.zeros(FEATURE_DIM, bool)
    progress = Progress(f"finding the columns {n:,} examples use", -(-n // _SCAN), stream=stream)
    for start in range(0, n, _SCAN):
        for part, at in zip(examples.parts(np.arange(start, min(start + _SCAN, n))), PART_STARTS):
            seen[at:at + part.shape[1]] |= (part != 0).any(axis=0)
        progress.advance()
    return np.flatnonzero(seen)


def fit_ranker(examples: Examples, epochs: int, batch: int, rng: np.random.Generator,
               stream: TextIO | None) -> graphs.MlpWeights:
    """Train the wide-and-deep ranker on the examples (PyTorch, the `.[train]` extra).

    Only the columns some example sets are trained (`active_columns`): a column that is zero in every example adds
    nothing to any output or gradient, and Adam's weight decay alone would carry its weights to about zero, so they
    are left at exactly zero. The other weights start from the full network's initialisation and follow the same
    steps as training all 4,736 columns would, at a third of the first layer's cost."""
    import torch
    net = _WideDeep(torch)
    active = active_columns(examples, stream)
    cross = np.flatnonzero(active >= FEATURE_DIM - CROSS_DIM)  # positions, among the active, of the wide part's input
    first, wide = net.deep[0], net.wide
    narrow = torch.nn.Linear(len(active), first.out_features)
    narrow_wide = torch.nn.Linear(len(cross), len(HEADS), bias=False)
    with torch.no_grad():
        narrow.weight.copy_(first.weight[:, active])
        narrow.bias.copy_(first.bias)
        narrow_wide.weight.copy_(wide.weight[:, active[cross] - (FEATURE_DIM - CROSS_DIM)])
    rest = net.deep[1:]
    parameters = [*narrow.parameters(), *rest.parameters(), *narrow_wide.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=1e-3, weight_decay=1e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = rng.permutation(len(examples))
    batch = int(np.clip(len(order) * epochs // MIN_STEPS, 32, batch))
    steps = epochs * -(-len(order) // batch)
    ticker = Progress(f"training {MODEL_NAME} ({len(order):,} examples, {len(active):,} of {FEATURE_DIM:,} columns "
                      f"in use)", steps, stream=stream)
    cross_index = torch.from_numpy(cross)
    net.train()
    for _ in range(epochs):
        for start in range(0, len(order), batch):
            index = order[start:start + batch]
            x = torch.from_numpy(examples.features(index, active))
            y = torch.from_numpy(examples.labels[index])
            optimiser.zero_grad()
            loss = loss_fn(rest(narrow(x)) + narrow_wide(x[:, cross_index]), y)
            loss.backward()
            optimiser.step()
            ticker.advance(note=f"loss {loss.item():.4f}")
    net.eval()
    with torch.no_grad():  # back into the full network: unused columns weigh exactly zero
        first.weight.zero_()
        first.weight[:, active] = narrow.weight
        first.bias.copy_(narrow.bias)
        wide.weight.zero_()
        wide.weight[:, active[cross] - (FEATURE_DIM - CROSS_DIM)] = narrow_wide.weight
    return net.weights()


def check_enough_events(n: int) -> None:
    """Refuse (TrainingError) an event log too small to train and evaluate on."""
    if n < MIN_EVENTS:
        raise TrainingError(f"the event log holds {n} events: at least {MIN_EVENTS} are needed to train and evaluate")


def train(catalog: Catalog, grid: list[AlsParams] = GRID, epochs: int = 4, batch: int = 512, seed: int = 0,
          stream: TextIO | None = None, threads: int = 0) -> Trained:
    """Learn the vectors (ALS tuned on each user's latest training events, then taken on over all of them) and the
    ranker on top (trained on that validation slice, with vectors learned without it: no leak of its labels). The
    ranker trains on `threads` PyTorch threads (0: one per core)."""
    try:
        import torch
    except ImportError:
        raise TrainingError("training needs PyTorch and implicit: pip install '.[train]'") from None
    stream = stream if stream is not None else io.StringIO()
    events, size = catalog.events, catalog.items.size
    n = len(events["user"])
    check_enough_events(n)
    if not catalog.items.servable[:size].any():
        raise TrainingError("no item has a content vector yet: wait for encoding (or start the gateway with --encoder-home)")
    torch.manual_seed(seed)
    torch.set_num_threads(threads or max(os.cpu_count() or 1, 1))
    rng = np.random.default_rng(seed)
    shape = (catalog.user_rows, size)
    held = per_user_holdout(events["user"], events["timestamp"], VALIDATION_SHARE)
    fit = interactions(events["user"][~held], events["item"][~held], events["event"][~held], shape)
    validation = interactions(events["user"][held], events["item"][held], events["event"][held], shape)
    progress = Progress(f"tuning ALS on {held.sum():,} validation events ({len(grid)} settings)", len(grid), stream=stream)
    params, results, (users, items) = tune(fit, validation, grid, seed=seed,
                           report=lambda p, v: progress.advance(note=f"{p.factors}f reg {p.regularization:g} "
                                                                     f"alpha {p.alpha:g}: NDCG@20 {v:.4f}"))
    print(f"ALS: {params.factors} factors, regularization {params.regularization:g}, alpha {params.alpha:g} "
          f"(validation NDCG@20 {results[params]:.4f})", file=stream)
    known = np.diff(fit.tocsc().indptr) > 0
    scale = float(1 / max(np.linalg.norm(items[known], axis=1).mean(), 1e-6)) if known.any() else 1.0
    with working("placing the items without events by their content; what follows what", stream):
        learned = _space(catalog, users, items, fit, scale, params)
        transitions = fit_transitions(catalog, ~held)
    examples = ranker_examples(catalog, learned, np.flatnonzero(held), fit, transitions, rng, stream)

    weights = fit_ranker(examples, epochs, batch, rng, stream)

    with working(f"taking the vectors over all {n:,} events", stream):
        everything = interactions(events["user"], events["item"], events["event"], shape)
        users, items = continue_als(everything, params, (users, items), seed=seed)
        space = _space(catalog, users, items, everything, scale, params)
        transitions = fit_transitions(catalog, np.ones(n, bool))
    metrics = {"validation_ndcg20_als": results[params], "examples": float(len(examples)), "events": float(n)}
    return Trained(weights, space, transitions, metrics)


def export(weights: graphs.MlpWeights, metrics: dict[str, float], directory: Path, version: str,
           source: str, extra: dict | None = None, transitions: Transitions | None = None) -> ModelManifest:
    """Write the graphs (naive, decomposed, its int8 twin, item tower), the transitions, and their manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    if transitions is not None:
        transitions.save(directory / TRANSITIONS_FILE)
    graphs.save(graphs.naive_graph(weights), directory / GRAPHS["naive"])
    graphs.save(graphs.decomposed_graph(weights), directory / GRAPHS["decomposed"])
    graphs.save(graphs.item_tower_graph(weights), directory / GRAPHS["item_tower"])
    graphs.quantize_int8(directory / GRAPHS["decomposed"], directory / GRAPHS["decomposed_int8"])
    manifest = ModelManifest(
        name=MODEL_NAME, version=version, directory=directory, graphs=dict(GRAPHS), metrics=metrics,
        extra={"heads": list(HEADS), "head_weights": DEFAULT_HEAD_WEIGHTS, "trained_on": source,
               "graph_format": graphs.GRAPH_FORMAT,
               "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(extra or {})},
    )
    write_manifest(manifest)
    return manifest


def export_trained(trained: Trained, store: Store, schema: Schema, root: Path, sequence: int,
                   extra: dict | None = None, stream: TextIO | None = None) -> ModelManifest:
    """Stage the learned space in the store (served once published) and export the ranker's graphs, with a manifest
    naming that space, as the next version under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(root)
    with working(f"exporting {MODEL_NAME}/{version} (its space into the store; its graphs and their int8 twin)",
                 stream if stream is not None else io.StringIO()):
        return _export_trained(trained, store, schema, root, sequence, version, extra)


def _export_trained(trained: Trained, store: Store, schema: Schema, root: Path, sequence: int, version: str,
                    extra: dict | None) -> ModelManifest:
    space = trained.vectors
    items = np.flatnonzero(space.known)
    users = np.flatnonzero(space.users_known)
    space_id = store.add_space(f"{MODEL_NAME}/{version}", sequence, space.projection, (items + 1, space.items[items]),
                               (users, space.users[users]))
    staging = root / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    export(trained.weights, trained.metrics, staging, version, f"{store.name} up to sequence {sequence}",
           {"vector_dim": int(space.items.shape[1]), "schema": schema.name, "trained_to_sequence": sequence, "space": space_id,
            "cold_start": [round(float(v), 7) for v in space.cold_start], "vectors": space.describe(), **(extra or {})},
           trained.transitions)
    staging.rename(root / version)
    return load_manifest(root / version)

