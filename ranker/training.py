"""Fits the first ranking model on the world's interaction logs and exports it as versioned ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engines.base import ModelManifest, load_manifest, write_manifest
from world import World
from world.progress import Progress

__all__ = ["MODEL_NAME", "ensure_model", "train_model", "item_extras", "auc"]

MODEL_NAME = "ranker-lr"
MODEL_VERSION = "1"
FRESHNESS_DAYS = 7.0


def item_extras(world: World, now: int | None = None) -> np.ndarray:
    """Per-item features beside the embedding: freshness and scaled log popularity, [N, 2]."""
    now = world.now if now is None else now
    age_days = (now - world.item_published.astype(np.float64)) / 86400
    fresh = np.exp(-np.clip(age_days, 0, None) / FRESHNESS_DAYS)
    pop = np.log1p(world.item_popularity.astype(np.float64)) / 10
    return np.stack([fresh, pop], axis=1).astype(np.float32)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _features(world: World, users: np.ndarray, items: np.ndarray, extras: np.ndarray) -> np.ndarray:
    u = np.asarray(world.user_tastes)[users - 1]
    i = np.asarray(world.item_embeddings)[items - 1]
    return np.concatenate([u * i, extras[items - 1]], axis=1)


def train_model(world: World, steps: int = 300, quiet: bool = False) -> tuple[np.ndarray, float, dict[str, float]]:
    """Logistic regression on [user*item, freshness, popularity] by full-batch Adam; returns (w, b, metrics)."""
    logs = world.interactions
    extras = item_extras(world)
    x = _features(world, logs["user"], logs["item"], extras).astype(np.float64)
    y = logs["label"].astype(np.float64)
    split = int(len(y) * 0.8)  # logs are time-ordered: train on the past, test on the future
    xt, yt, xv, yv = x[:split], y[:split], x[split:], y[split:]
    w, b = np.zeros(x.shape[1]), 0.0
    m, v, mb, vb = np.zeros_like(w), np.zeros_like(w), 0.0, 0.0
    progress = Progress(f"training {MODEL_NAME}", steps, stream=open(os.devnull, "w") if quiet else None)
    for t in range(1, steps + 1):
        p = 1 / (1 + np.exp(-(xt @ w + b)))
        gw, gb = xt.T @ (p - yt) / len(yt), float((p - yt).mean())
        m, v = 0.9 * m + 0.1 * gw, 0.999 * v + 0.001 * gw**2
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb**2
        w -= 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        b -= 0.05 * (mb / (1 - 0.9**t)) / (np.sqrt(vb / (1 - 0.999**t)) + 1e-8)
        progress.advance()
    metrics = {
        "auc": auc(xv @ w + b, yv),
        "popularity_auc": auc(xv[:, -1], yv),
    }
    return w.astype(np.float32), float(b), metrics


def _export(w: np.ndarray, b: float, dim: int, path: Path) -> None:
    """scores[N] = sigmoid(concat(user * items, extras) @ w + b), features assembled inside the graph."""
    nodes = [
        helper.make_node("Mul", ["user", "items"], ["cross"]),
        helper.make_node("Concat", ["cross", "extras"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "w"], ["logit_col"]),
        helper.make_node("Add", ["logit_col", "b"], ["logit_b"]),
        helper.make_node("Sigmoid", ["logit_b"], ["prob"]),
        helper.make_node("Reshape", ["prob", "flat"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL_NAME,
        inputs=[
            helper.make_tensor_value_info("user", TensorProto.FLOAT, [1, dim]),
            helper.make_tensor_value_info("items", TensorProto.FLOAT, ["n", dim]),
            helper.make_tensor_value_info("extras", TensorProto.FLOAT, ["n", 2]),
        ],
        outputs=[helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n"])],
        initializer=[
            numpy_helper.from_array(w.reshape(-1, 1), "w"),
            numpy_helper.from_array(np.array([b], dtype=np.float32), "b"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="feedserve")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def ensure_model(world: World, quiet: bool = False) -> ModelManifest:
    """The ranking model for `world`, trained and exported on first use under the world's models/."""
    directory = world.path / "models" / MODEL_NAME / MODEL_VERSION
    if (directory / "manifest.json").exists():
        return load_manifest(directory)
    staging = directory.with_name(f".{MODEL_VERSION}.{os.getpid()}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    w, b, metrics = train_model(world, quiet=quiet)
    _export(w, b, world.spec.dim, staging / "model.onnx")
    write_manifest(
        ModelManifest(MODEL_NAME, MODEL_VERSION, staging / "model.onnx", "fp32", metrics, {"dim": world.spec.dim})
    )
    try:
        staging.rename(directory)
    except OSError:
        if not (directory / "manifest.json").exists():
            raise
    return load_manifest(directory)
