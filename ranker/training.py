"""Fits the multi-objective ranker on interaction logs and exports it as a versioned set of ONNX graphs.

Training uses PyTorch (the optional `.[train]` extra); serving needs only ONNX Runtime.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from engines.base import ModelManifest, load_manifest, write_manifest
from ranker import model as graphs
from ranker.features import (
    FEATURE_DIM, HEADS, ItemTable, context_features, cross_features, item_features, user_features,
)
from world import World
from world.progress import Progress

__all__ = ["MODEL_NAME", "ensure_model", "train", "auc", "ndcg_at", "TrainingError", "DEFAULT_HEAD_WEIGHTS"]

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


class _Examples:
    """Feature rows for logged (user, item, context) triples, built batch by batch."""

    def __init__(self, world: World, logs: dict[str, np.ndarray]) -> None:
        self.world, self.logs = world, logs
        self.items = ItemTable.from_world(world)
        self.tastes = np.asarray(world.user_tastes)
        self.user_attributes = np.asarray(world.user_attributes)
        self.centroids = np.asarray(world.category_centroids)
        pop_rank = np.argsort(np.argsort(-self.items.popularity))
        self.popular = pop_rank < max(len(self.items) // 100, 1)

    def features(self, index: np.ndarray) -> np.ndarray:
        logs, items = self.logs, self.items
        users = self.tastes[logs["user"][index] - 1]
        attributes = self.user_attributes[logs["user"][index] - 1]
        rows = logs["item"][index] - 1
        now = logs["timestamp"][index]
        # the sources retrieval would have given, by the same rules of thumb at training time
        affinity = np.einsum("nd,nd->n", users, items.embeddings[rows])
        category_affinity = np.take_along_axis(users @ self.centroids.T, items.category[rows, None].astype(np.int64), 1)[:, 0]
        sources = ((affinity > 0.5) * 1 + (category_affinity > 0.5) * 2
                   + ((now - items.published[rows]) < 3 * 86400) * 4 + self.popular[rows] * 8).astype(np.uint8)
        scores = np.stack([affinity, category_affinity], axis=1).astype(np.float32)
        cross = cross_features(users, attributes, items, rows, sources, scores, 0, self.centroids)
        age_days = np.clip((now - items.published[rows]) / 86400, 0, None)
        cross[:, 64 + 7] = np.exp(-age_days / 7.0)  # freshness at the time of the impression
        weekday = (now // 86400 + 3) % 7  # 1970-01-01 was a Thursday
        context = context_features(logs["hour"][index], weekday, logs["device"][index], logs["surface"][index])
        user = user_features(users, attributes, self.centroids)
        return np.concatenate([user, item_features(items, rows), context, cross], axis=1)

    def labels(self, index: np.ndarray) -> np.ndarray:
        return np.stack([self.logs[h][index] for h in HEADS], axis=1).astype(np.float32)


MIN_STEPS = 300  # small logs get smaller batches rather than too few optimiser steps


def train(world: World, logs: dict[str, np.ndarray] | None = None, epochs: int = 1, max_examples: int = 150_000,
          batch: int = 512, seed: int = 0, stream: TextIO | None = None) -> tuple[graphs.MlpWeights, dict[str, float]]:
    """Fit the MLP on the earliest 80% of the logs; evaluate on the latest 20% against popularity."""
    try:
        import torch
    except ImportError:
        raise TrainingError("training needs PyTorch: pip install '.[train]' (CPU wheel: torch==2.13.0)") from None
    torch.manual_seed(seed)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    logs = world.interactions if logs is None else logs
    n = len(logs["user"])
    split = int(n * 0.8)  # time-ordered: train on the past, test on the future
    rng = np.random.default_rng(seed)
    train_index = rng.permutation(split)[:max_examples]
    test_index = np.arange(split, n)[: max(max_examples // 3, 1)]
    examples = _Examples(world, logs)
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
            y = torch.from_numpy(examples.labels(index))
            optimiser.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimiser.step()
            progress.advance(note=f"loss {loss.item():.4f}")

    net.eval()
    probs = []
    with torch.no_grad():
        for start in range(0, len(test_index), 4096):
            probs.append(torch.sigmoid(net(torch.from_numpy(examples.features(test_index[start:start + 4096])))).numpy())
    heads = np.concatenate(probs)
    labels = examples.labels(test_index)
    blend = np.array([DEFAULT_HEAD_WEIGHTS[h] for h in HEADS], np.float32)
    popularity = examples.items.popularity[logs["item"][test_index] - 1].astype(np.float64)
    users = logs["user"][test_index]
    metrics = {
        "auc_click": auc(heads[:, 0], labels[:, 0]),
        "popularity_auc_click": auc(popularity, labels[:, 0]),
        "ndcg20": ndcg_at(20, users, heads @ blend, labels @ blend),
        "popularity_ndcg20": ndcg_at(20, users, popularity, labels @ blend),
        "examples": float(len(train_index)),
    }
    for i, head in enumerate(HEADS[1:], 1):
        metrics[f"auc_{head}"] = auc(heads[:, i], labels[:, i])
    layers = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = graphs.MlpWeights(*(t for layer in layers for t in (layer.weight.detach().numpy().T.copy(),
                                                                  layer.bias.detach().numpy().copy())))
    return weights, metrics


def export(weights: graphs.MlpWeights, metrics: dict[str, float], directory: Path, version: str,
           source: str) -> ModelManifest:
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
               "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )
    write_manifest(manifest)
    return manifest


def next_version(root: Path) -> str:
    versions = [int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "manifest.json").exists()]
    return str(max(versions, default=0) + 1)


def ensure_model(world: World, stream: TextIO | None = None) -> ModelManifest:
    """The newest trained model of `world`; trains and exports version 1 on first use."""
    root = world.path / "models" / MODEL_NAME
    versions = sorted((int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "manifest.json").exists()))
    if versions:
        manifest = load_manifest(root / str(versions[-1]))
        if manifest.extra.get("graph_format", 1) < graphs.GRAPH_FORMAT:  # older graphs: re-export, same weights
            manifest = export(graphs.weights_of(manifest.path("naive")), manifest.metrics, manifest.directory,
                              manifest.version, str(manifest.extra.get("trained_on", "")))
        return manifest
    weights, metrics = train(world, stream=stream)
    staging = root / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    export(weights, metrics, staging, "1", "synthetic world logs")
    try:
        staging.rename(root / "1")
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (root / "1" / "manifest.json").exists():
            raise
    return load_manifest(root / "1")
