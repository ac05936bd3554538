"""Fits the multi-objective ranker on interaction logs and exports it as a versioned set of ONNX graphs.

Training uses PyTorch (the optional `.[train]` extra); serving needs only ONNX Runtime.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from engines.base import ModelManifest, load_manifest, write_manifest
from ranker import model as graphs
from catalog import ChangeFollower, Schema, Store
from catalog.drift import replay_drift
from ranker.features import FEATURE_DIM, HEADS, FeatureSpace
from ranker.items import ItemTable
from mesh.progress import Progress

__all__ = ["MODEL_NAME", "Catalog", "load_catalog", "history_vectors", "train", "export", "fit_and_export", "newest_model", "next_version",
           "auc", "ndcg_at", "TrainingError", "DEFAULT_HEAD_WEIGHTS", "POSITIVES"]

MODEL_NAME = "ranker-mlp"
DEFAULT_HEAD_WEIGHTS = {"click": 1.0, "like": 0.5, "dwell": 0.3, "share": 0.2}
GRAPHS = {"naive": "naive.onnx", "decomposed": "decomposed.onnx", "decomposed_int8": "decomposed.int8.onnx",
          "item_tower": "item_tower.onnx"}


class TrainingError(RuntimeError):
    """Training cannot run (missing extra) or produced a model that does not beat the baseline."""


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties broken by order)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ndcg_at(k: int, users: np.ndarray, scores: np.ndarray, relevance: np.ndarray) -> float:
    """Mean NDCG@k over users with at least one relevant item, each user's items ranked by score."""
    order = np.lexsort((-scores, users))
    users, relevance = users[order], relevance[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    discounts = 1 / np.log2(np.arange(2, k + 2))
    values = []
    for a, b in zip(starts, ends):
        rel = relevance[a:b]
        if rel.sum() == 0:
            continue
        ideal = np.sort(rel)[::-1][:k]
        values.append(float((rel[:k] * discounts[: min(k, b - a)]).sum() / (ideal * discounts[: len(ideal)]).sum()))
    return float(np.mean(values)) if values else float("nan")


# Event types (EventType values of feedserve.v1) that count as each objective's positive.
POSITIVES = {"click": (2, 3, 4, 5), "like": (3, 4), "dwell": (5,), "share": (4,)}
POPULAR_SHARE = 0.01  # the top 1% of items by interactions count as the popular source at training time
_INTEREST = 0.5  # a candidate this close to the user would have come from the interest source


@dataclass
class Catalog:
    """What training reads from the store: the items coded as the ranker codes them, users' attributes, and the
    event log in time order with the sequence it reaches."""

    items: ItemTable
    users: dict[int, dict]
    events: dict[str, np.ndarray]
    sequence: int


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


def history_vectors(catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """Every user's vector after their whole history, by the paramserver's drift rule: (user ids, vectors)."""
    events = catalog.events
    users, _ = replay_drift(events["user"], events["item"], events["event"], catalog.items.vectors[:catalog.items.size])
    ids = np.array(sorted(users), np.int64)
    vectors = np.stack([users[int(u)] for u in ids]) if len(ids) else np.zeros((0, catalog.items.space.dim), np.float32)
    return ids, vectors


class _Examples:
    """Feature rows and labels for logged events and sampled negatives, built batch by batch with the serving code.

    Each logged event gets one random servable item as an implicit negative for the same user at the same moment,
    so catalogs that log only positives (ratings) still teach the model what is *not* chosen."""

    def __init__(self, catalog: Catalog, index: np.ndarray, seed: int) -> None:
        self.catalog, self.space = catalog, catalog.items.space
        events, items = catalog.events, catalog.items
        servable = np.flatnonzero(items.servable[:items.size])
        rng = np.random.default_rng(seed)
        n = len(index)
        self.users = np.concatenate([events["user"][index]] * 2)
        self.rows = np.concatenate([events["item"][index] - 1, rng.choice(servable, n)])
        self.stamps = np.concatenate([events["timestamp"][index]] * 2)
        labels = np.zeros((2 * n, len(HEADS)), np.float32)
        for k, head in enumerate(HEADS):
            labels[:n, k] = np.isin(events["event"][index], POSITIVES[head])
        self.labels = labels
        _, before = replay_drift(events["user"], events["item"], events["event"], items.vectors[:items.size], before=index)
        self.vectors = np.concatenate([before, before])
        counts = np.bincount(events["item"] - 1, minlength=items.size).astype(np.float32)
        self.popularity = counts
        self.popular = counts >= np.quantile(counts, 1 - POPULAR_SHARE) if len(counts) else counts.astype(bool)

    def __len__(self) -> int:
        return len(self.rows)

    def features(self, index: np.ndarray) -> np.ndarray:
        items, space = self.catalog.items, self.space
        rows, stamps, users = self.rows[index], self.stamps[index], self.vectors[index]
        known = np.abs(users).sum(axis=1) > 0
        attributes = [self.catalog.users.get(int(u)) for u in self.users[index]]
        user = space.user_features(users, attributes)
        vectors = items.vectors[rows]
        affinity = np.einsum("nd,nd->n", users, vectors)
        age = stamps - items.published[rows]
        # the sources retrieval would have given, by the same rules of thumb at training time
        sources = (((affinity >= _INTEREST) & known) * 1 + (age < 3 * 86400) * 4 + self.popular[rows] * 8).astype(np.uint8)
        cross = np.concatenate([
            space.cross_features(users[k:k + 1], space.user_crosses(attributes[k]), vectors[k:k + 1],
                                 items.category[rows[k:k + 1]], sources[k:k + 1], age[k:k + 1],
                                 self.popularity[rows[k:k + 1]]) for k in range(len(index))])
        hour, weekday = (stamps // 3600) % 24, (stamps // 86400 + 3) % 7  # 1970-01-01 was a Thursday
        context = space.context_features(hour, weekday, [{}] * len(index))
        return np.concatenate([user, items.features(rows), context, cross], axis=1)


MIN_STEPS = 300  # small logs get smaller batches rather than too few optimiser steps


def train(catalog: Catalog, epochs: int = 1, max_examples: int = 100_000, batch: int = 512, seed: int = 0,
          stream: TextIO | None = None) -> tuple[graphs.MlpWeights, dict[str, float]]:
    """Fit the MLP on the earliest 80% of the events (in time); evaluate on the latest 20% against popularity."""
    try:
        import torch
    except ImportError:
        raise TrainingError("training needs PyTorch: pip install '.[train]' (CPU wheel: torch==2.13.0)") from None
    n = len(catalog.events["user"])
    if n < 100:
        raise TrainingError(f"the event log holds {n} events: at least 100 are needed to train and evaluate")
    if not catalog.items.servable[:catalog.items.size].any():
        raise TrainingError("no item has a content vector yet: wait for encoding (or start the gateway with --encoder-home)")
    torch.manual_seed(seed)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    split = int(n * 0.8)  # time-ordered: train on the past, test on the future
    rng = np.random.default_rng(seed)
    train_events = np.sort(rng.permutation(split)[:max_examples])
    test_events = np.arange(split, n)[: max(max_examples // 3, 1)]
    examples = _Examples(catalog, train_events, seed)
    test = _Examples(catalog, test_events, seed + 1)
    train_index = rng.permutation(len(examples))
    batch = int(np.clip(len(train_index) * epochs // MIN_STEPS, 32, batch))

    dims = (FEATURE_DIM, *graphs.HIDDEN, len(HEADS))
    net = torch.nn.Sequential(
        torch.nn.Linear(dims[0], dims[1]), torch.nn.ReLU(),
        torch.nn.Linear(dims[1], dims[2]), torch.nn.ReLU(),
        torch.nn.Linear(dims[2], dims[3]),
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    steps = epochs * -(-len(train_index) // batch)
    progress = Progress(f"training {MODEL_NAME} ({len(train_index):,} examples)", steps,
                        stream=stream if stream is not None else open(os.devnull, "w"))
    net.train()
    for _ in range(epochs):
        for start in range(0, len(train_index), batch):
            index = train_index[start:start + batch]
            x = torch.from_numpy(examples.features(index))
            y = torch.from_numpy(examples.labels[index])
            optimiser.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimiser.step()
            progress.advance(note=f"loss {loss.item():.4f}")

    net.eval()
    probs = []
    with torch.no_grad():
        for start in range(0, len(test), 4096):
            index = np.arange(start, min(start + 4096, len(test)))
            probs.append(torch.sigmoid(net(torch.from_numpy(test.features(index)))).numpy())
    heads = np.concatenate(probs)
    labels = test.labels
    blend = np.array([DEFAULT_HEAD_WEIGHTS[h] for h in HEADS], np.float32)
    popularity = examples.popularity[test.rows].astype(np.float64)  # counted on the training period only
    metrics = {
        "auc_click": auc(heads[:, 0], labels[:, 0]),
        "popularity_auc_click": auc(popularity, labels[:, 0]),
        "ndcg20": ndcg_at(20, test.users, heads @ blend, labels @ blend),
        "popularity_ndcg20": ndcg_at(20, test.users, popularity, labels @ blend),
        "examples": float(len(train_index)),
        "events": float(n),
    }
    for i, head in enumerate(HEADS[1:], 1):
        metrics[f"auc_{head}"] = auc(heads[:, i], labels[:, i])
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = graphs.MlpWeights(*(t for layer in layers for t in (layer.weight.detach().numpy().T.copy(),
                                                                  layer.bias.detach().numpy().copy())))
    return weights, metrics


def export(weights: graphs.MlpWeights, metrics: dict[str, float], directory: Path, version: str,
           source: str, extra: dict | None = None) -> ModelManifest:
    """Write the graphs (naive, decomposed, its int8 twin, item tower) and their manifest."""
    directory.mkdir(parents=True, exist_ok=True)
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


def next_version(root: Path) -> str:
    versions = [int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "manifest.json").exists()]
    return str(max(versions, default=0) + 1)


def newest_model(root: Path) -> ModelManifest | None:
    """The newest exported version under `root` (HOME/models/ranker-mlp), or None."""
    versions = sorted(int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "manifest.json").exists())
    return load_manifest(root / str(versions[-1])) if versions else None


def fit_and_export(store: Store, schema: Schema, root: Path, dim: int, epochs: int = 1, max_examples: int = 100_000,
                   stream: TextIO | None = None, require_better: bool = True) -> ModelManifest:
    """Train on everything in the store so far and export the next version under `root`; refuses (TrainingError)
    a model that does not beat popularity on the held-out 20%, unless `require_better` is off."""
    catalog = load_catalog(store, schema, dim)
    weights, metrics = train(catalog, epochs=epochs, max_examples=max_examples, stream=stream)
    if require_better and not metrics["auc_click"] > metrics["popularity_auc_click"]:
        raise TrainingError(f"click AUC {metrics['auc_click']:.3f} does not beat popularity's "
                            f"{metrics['popularity_auc_click']:.3f}: not exported")
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(root)
    staging = root / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    export(weights, metrics, staging, version, f"{store.name} up to sequence {catalog.sequence}",
           {"vector_dim": dim, "schema": schema.name, "trained_to_sequence": catalog.sequence})
    staging.rename(root / version)
    return load_manifest(root / version)
