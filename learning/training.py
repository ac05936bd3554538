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
from learning.sequential import sequences
from learning.vectors import (
    GRID,
    AlsParams,
    LearnedVectors,
    continue_als,
    fit_als,
    fit_projection,
    interactions,
    per_user_holdout,
    tune,
    unit,
)
from mesh.progress import Progress
from ranker import graphs
from ranker.exported import MODEL_NAME, newest_model, next_version
from ranker.features import CROSS_DIM, FEATURE_DIM, HEADS, FeatureSpace, RecentItems
from ranker.history import POSITIVE_EVENTS, snapshots
from ranker.items import ItemTable, trend_before
from ranker.transitions import FILE as TRANSITIONS_FILE
from ranker.transitions import Transitions

__all__ = ["DEFAULT_HEAD_WEIGHTS", "MODEL_NAME", "POSITIVES", "Catalog", "Trained", "TrainingError",
           "current_user_vectors", "export", "export_trained", "fit_transitions", "load_catalog", "newest_model",
           "next_version", "stable_ranks", "train"]

DEFAULT_HEAD_WEIGHTS = {"click": 1.0, "like": 0.5, "dwell": 0.3, "share": 0.2}
GRAPHS = {"naive": "naive.onnx", "decomposed": "decomposed.onnx", "decomposed_int8": "decomposed.int8.onnx",
          "item_tower": "item_tower.onnx"}


class TrainingError(RuntimeError):
    """Training cannot run (missing extra) or produced a model that does not beat the baseline."""


# Event types (EventType values of feedserve.v1) that count as each objective's positive.
POSITIVES = {"click": POSITIVE_EVENTS, "like": (3, 4), "dwell": (5,), "share": (4,)}
VALIDATION_SHARE = 0.125  # each user's latest 12.5% of training events: where ALS is tuned and the ranker learns
# negatives per validation event, drawn from what retrieval would give that user (as the ranker sees them); chosen
# on the validation slice of ml-100k's training period: 4, 8 and 16 gave 1.060, 1.075 and 1.111 x the best baseline
NEGATIVES = 16
_CANDIDATES = 2_400  # what serving retrieves; negatives and source bits at training time mimic it
COLD_SHARE = 0.125  # validation events seen again as a new user's: what the ranker learns cold start from
_MAX_EXAMPLE_EVENTS = 25_000  # validation events the ranker learns from at most (sampled): bounds training time
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


class _Examples:
    """Feature rows and labels for the validation slice's events and their negatives, built batch by batch with
    the serving code, in the space the vectors were learned in (`interest`: where retrieval would have ranked each
    row's item for its user; `user_vectors`: the user's vector at that moment; `recent` and `activity`: the user's
    latest positive items and event count from the events strictly before that moment, as serving's History;
    `trend`: the row's item's trend from the same events, as serving's ItemTable; `transitions`: learned from the
    events the vectors were learned from)."""

    def __init__(self, catalog: Catalog, users: np.ndarray, rows: np.ndarray, stamps: np.ndarray, labels: np.ndarray,
                 interest: np.ndarray, user_vectors: np.ndarray, learned: LearnedVectors, popularity: np.ndarray,
                 recent: np.ndarray, activity: np.ndarray, trend: np.ndarray, transitions: Transitions) -> None:
        self.catalog, self.space, self.learned = catalog, catalog.items.space, learned
        self.users, self.rows, self.stamps, self.labels, self.interest = users, rows, stamps, labels, interest
        self.user_vectors, self.popularity = user_vectors, popularity
        self.recent, self.activity, self.trend, self.transitions = recent, activity, trend, transitions
        size = catalog.items.size
        self.popular_rank = np.empty(size, np.int64)
        self.popular_rank[np.argsort(-popularity, kind="stable")] = np.arange(size)
        self.fresh_rank = np.empty(size, np.int64)
        self.fresh_rank[np.argsort(-catalog.items.published[:size], kind="stable")] = np.arange(size)

    def __len__(self) -> int:
        return len(self.rows)

    def features(self, index: np.ndarray) -> np.ndarray:
        items, space = self.catalog.items, self.space
        rows, stamps, users = self.rows[index], self.stamps[index], self.user_vectors[index]
        attributes = [self.catalog.users.get(int(u)) for u in self.users[index]]
        user = space.user_features(users, attributes)
        vectors = self.learned.items[rows]
        age = stamps - items.published[rows]
        # the sources serving's retrieval would have given (about half by interest, an eighth each fresh and popular)
        sources = ((self.interest[index] < _CANDIDATES * 0.55) * 1 + (self.fresh_rank[rows] < _CANDIDATES // 8) * 4
                   + (self.popular_rank[rows] < _CANDIDATES // 8) * 8).astype(np.uint8)
        recent = self.recent[index]
        transition = self.transitions.scores(recent, rows)
        valid = recent >= 0
        recent = np.where(valid, recent, 0)
        history = RecentItems(self.learned.items[recent], items.content[recent], self.activity[index], valid)
        cross = space.cross_features(users, [], vectors, items.category[rows], sources, age, self.popularity[rows],
                                     self.interest[index], items.content[rows], history, self.trend[index], transition,
                                     [space.user_crosses(a) for a in attributes])
        hour, weekday = (stamps // 3600) % 24, (stamps // 86400 + 3) % 7  # 1970-01-01 was a Thursday
        context = space.context_features(hour, weekday, [{}] * len(index))
        item = space.item_features(vectors, items.content[rows], items.columns[rows], items.numeric[rows])
        return np.concatenate([user, item, context, cross], axis=1)


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


def _labels(events: np.ndarray) -> np.ndarray:
    labels = np.zeros((len(events), len(HEADS)), np.float32)
    for k, head in enumerate(HEADS):
        labels[:, k] = np.isin(events, POSITIVES[head])
    return labels


def stable_ranks(scores: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Where `columns` would stand in a stable descending sort of `scores` (0 = first), without sorting: the count of
    higher scores, plus equal ones at a lower index."""
    at = scores[columns]
    higher = (scores[None, :] > at[:, None]).sum(axis=1)
    tied = (scores[None, :] == at[:, None]) & (np.arange(len(scores))[None, :] < columns[:, None])
    return higher + tied.sum(axis=1)


def _negatives(scores: np.ndarray, positives: np.ndarray, pool_size: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `scores` (one event's retrieval scores, -inf where serving would not retrieve), NEGATIVES
    items drawn from its best `pool_size`, and the ranks of its positive and those negatives."""
    size = scores.shape[1]
    negatives = np.zeros((len(scores), NEGATIVES), np.int64)
    ranks = np.zeros((len(scores), 1 + NEGATIVES), np.int64)
    # only the best pool_size (as a set) and the ranks of a few items per event are needed: a partial selection
    # and a count, not a sort of the whole catalog per event
    best = np.argpartition(-scores, pool_size - 1, axis=1)[:, :pool_size] if pool_size < size else \
        np.broadcast_to(np.arange(size), scores.shape)
    for n in range(len(scores)):
        pool = best[n]
        pool = pool[pool != positives[n]]
        negatives[n] = rng.choice(pool, NEGATIVES) if len(pool) else positives[n]
        ranks[n] = stable_ranks(scores[n], np.r_[positives[n], negatives[n]])
    return negatives, ranks


def _ranker_examples(catalog: Catalog, space: LearnedVectors, validation: np.ndarray, fit: sp.csr_matrix,
                     transitions: Transitions, rng: np.random.Generator) -> _Examples:
    """The validation events (positives, and the dislikes and skips that are negatives), in time order, each with
    the user's vector as serving would hold it at that moment (learned, then moved by drift over the events before;
    the cold-start vector for a user with none yet), and negatives drawn uniformly from what retrieval would give
    that vector: the distribution the ranker meets when serving. (Negatives drawn from the very top would teach it
    that a high score is bad.) A share of the events (COLD_SHARE) is seen a second time as a new user would be:
    the cold-start vector, no history, nothing seen, so that the ranker learns what to show someone it knows
    nothing about (without them, the cold-start feed was below recent popularity on ml-1m)."""
    events, size = catalog.events, catalog.items.size
    if len(validation) > _MAX_EXAMPLE_EVENTS:  # a sample, kept in time order (drift replays it in that order)
        validation = np.sort(rng.choice(validation, _MAX_EXAMPLE_EVENTS, replace=False))
    who, rows = events["user"][validation], events["item"][validation] - 1
    start = {int(u): space.users[u] for u in np.unique(who).tolist() if space.users_known[u]}
    _, moment = replay_drift(who, rows + 1, events["event"][validation], space.items[:size],
                             before=np.arange(len(validation)), start=start)
    assert moment is not None
    moment[np.abs(moment).sum(axis=1) == 0] = space.cold_start
    moment = unit(moment)
    kinds, stamps = events["event"][validation], events["timestamp"][validation]
    recent, activity = snapshots(events["user"], events["item"], events["event"], events["timestamp"], validation)
    servable = catalog.items.servable[:size]
    pool_size = min(_CANDIDATES, int(servable.sum()))
    negatives = np.zeros((len(who), NEGATIVES), np.int64)
    ranks = np.zeros((len(who), 1 + NEGATIVES), np.int64)
    for a in range(0, len(who), 512):
        part = slice(a, a + 512)
        scores = moment[part] @ space.items[:size].T
        scores[:, ~servable] = -np.inf
        for n, user in enumerate(who[part].tolist()):
            scores[n, fit.indices[fit.indptr[user]:fit.indptr[user + 1]]] = -np.inf
        negatives[part], ranks[part] = _negatives(scores, rows[part], pool_size, rng)
    # the new users' copies: one retrieval for all of them (same vector, nothing seen); half keep the user's
    # attributes (a new user may bring some), half have none (user 0: no user has that id)
    cold = np.sort(rng.choice(len(who), int(len(who) * COLD_SHARE), replace=False))
    cold_scores = unit(space.cold_start[None, :]) @ space.items[:size].T
    cold_scores[:, ~servable] = -np.inf
    cold_negatives = np.zeros((len(cold), NEGATIVES), np.int64)
    cold_ranks = np.zeros((len(cold), 1 + NEGATIVES), np.int64)
    for a in range(0, len(cold), 512):
        part = slice(a, a + 512)
        chunk = rows[cold[part]]
        cold_negatives[part], cold_ranks[part] = _negatives(np.broadcast_to(cold_scores, (len(chunk), size)), chunk,
                                                            pool_size, rng)
    anonymous = np.where(rng.random(len(cold)) < 0.5, 0, who[cold])
    who = np.r_[who, anonymous]
    rows, kinds, stamps = (np.r_[x, x[cold]] for x in (rows, kinds, stamps))
    moment = np.concatenate([moment, np.broadcast_to(unit(space.cold_start[None, :]), (len(cold), moment.shape[1]))])
    recent = np.concatenate([recent, np.full((len(cold), recent.shape[1]), -1, np.int64)])
    activity = np.r_[activity, np.zeros(len(cold), np.int64)]
    negatives, ranks = np.concatenate([negatives, cold_negatives]), np.concatenate([ranks, cold_ranks])
    # trend as serving's ItemTable held it just before the event's second
    cutoffs = np.searchsorted(events["timestamp"], stamps, side="left")
    example_rows = np.concatenate([rows, negatives.ravel()])
    repeat = np.repeat(np.arange(len(who)), NEGATIVES)
    trend = trend_before(events["item"] - 1, example_rows, np.r_[cutoffs, cutoffs[repeat]])
    labels = np.concatenate([_labels(kinds), np.zeros((len(repeat), len(HEADS)), np.float32)])
    popularity = np.asarray(fit.astype(bool).sum(axis=0)).ravel().astype(np.float32)[:size]
    return _Examples(catalog, np.concatenate([who, who[repeat]]), example_rows,
                     np.concatenate([stamps, stamps[repeat]]), labels, np.concatenate([ranks[:, 0], ranks[:, 1:].ravel()]),
                     np.concatenate([moment, moment[repeat]]), space, popularity,
                     np.concatenate([recent, recent[repeat]]), np.concatenate([activity, activity[repeat]]), trend,
                     transitions)


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


def fit_ranker(examples: _Examples, epochs: int, batch: int, rng: np.random.Generator,
               stream: TextIO | None) -> graphs.MlpWeights:
    """Train the wide-and-deep ranker on the examples (PyTorch, the `.[train]` extra)."""
    import torch
    net = _WideDeep(torch)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = rng.permutation(len(examples))
    batch = int(np.clip(len(order) * epochs // MIN_STEPS, 32, batch))
    steps = epochs * -(-len(order) // batch)
    ticker = Progress(f"training {MODEL_NAME} ({len(order):,} examples)", steps, stream=stream)
    net.train()
    for _ in range(epochs):
        for start in range(0, len(order), batch):
            index = order[start:start + batch]
            x = torch.from_numpy(examples.features(index))
            y = torch.from_numpy(examples.labels[index])
            optimiser.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimiser.step()
            ticker.advance(note=f"loss {loss.item():.4f}")
    net.eval()
    return net.weights()


def train(catalog: Catalog, grid: list[AlsParams] = GRID, epochs: int = 4, batch: int = 512, seed: int = 0,
          stream: TextIO | None = None) -> Trained:
    """Learn the vectors (ALS tuned on each user's latest training events, then taken on over all of them) and the
    ranker on top (trained on that validation slice, with vectors learned without it: no leak of its labels)."""
    try:
        import torch
    except ImportError:
        raise TrainingError("training needs PyTorch and implicit: pip install '.[train]'") from None
    stream = stream if stream is not None else io.StringIO()
    events, size = catalog.events, catalog.items.size
    n = len(events["user"])
    if n < 100:
        raise TrainingError(f"the event log holds {n} events: at least 100 are needed to train and evaluate")
    if not catalog.items.servable[:size].any():
        raise TrainingError("no item has a content vector yet: wait for encoding (or start the gateway with --encoder-home)")
    torch.manual_seed(seed)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    rng = np.random.default_rng(seed)
    shape = (catalog.user_rows, size)
    held = per_user_holdout(events["user"], events["timestamp"], VALIDATION_SHARE)
    fit = interactions(events["user"][~held], events["item"][~held], events["event"][~held], shape)
    validation = interactions(events["user"][held], events["item"][held], events["event"][held], shape)
    progress = Progress(f"tuning ALS on {held.sum():,} validation events ({len(grid)} settings)", len(grid), stream=stream)
    params, results = tune(fit, validation, grid, seed=seed,
                           report=lambda p, v: progress.advance(note=f"{p.factors}f reg {p.regularization:g} "
                                                                     f"alpha {p.alpha:g}: NDCG@20 {v:.4f}"))
    print(f"ALS: {params.factors} factors, regularization {params.regularization:g}, alpha {params.alpha:g} "
          f"(validation NDCG@20 {results[params]:.4f})", file=stream)
    users, items = fit_als(fit, params, seed)
    known = np.diff(fit.tocsc().indptr) > 0
    scale = float(1 / max(np.linalg.norm(items[known], axis=1).mean(), 1e-6)) if known.any() else 1.0
    transitions = fit_transitions(catalog, ~held)
    examples = _ranker_examples(catalog, _space(catalog, users, items, fit, scale, params), np.flatnonzero(held), fit,
                                transitions, rng)

    weights = fit_ranker(examples, epochs, batch, rng, stream)

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
                   extra: dict | None = None) -> ModelManifest:
    """Stage the learned space in the store (served once published) and export the ranker's graphs, with a manifest
    naming that space, as the next version under `root`."""
    space = trained.vectors
    items = np.flatnonzero(space.known)
    users = np.flatnonzero(space.users_known)
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(root)
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

