"""Trains the generation tiers (small GPT-style decoders and their BPE tokenizer) and exports them to ONNX with a KV cache."""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from engines.base import ModelManifest, load_manifest, write_manifest
from engines.export import legacy_export
from generator.corpus import corpus
from mesh.progress import Progress

__all__ = ["TierSpec", "TIERS", "train_tokenizer", "train_tier", "ensure_tiers", "MODEL_FILE", "TOKENIZER_FILE"]

MODEL_FILE, TOKENIZER_FILE = "model.onnx", "tokenizer.json"
SHIPPED = Path(__file__).resolve().parent / "tiers"  # the default tiers, trained by this module and committed
FORMAT = 1


@dataclass(frozen=True)
class TierSpec:
    """One tier's shape, training length and price (per 1,000 tokens, in and out alike)."""

    name: str
    layers: int
    dim: int
    heads: int
    steps: int
    price_per_1k_tokens: float
    context: int = 256
    vocab: int = 1024
    seed: int = 0


TIERS = {
    # steps: the small tier starts copying the topic from its prompt after about 1,000 (75 s on 2 cores)
    "small": TierSpec("small", layers=2, dim=96, heads=2, steps=1200, price_per_1k_tokens=0.0002),
    "large": TierSpec("large", layers=4, dim=160, heads=4, steps=1000, price_per_1k_tokens=0.002),
}


def train_tokenizer(text: str, vocab: int, path: Path) -> None:
    """A byte-level BPE (GPT-2's scheme) fitted on `text`; every byte stays a token, so any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(text.split("\n\n"), trainer=trainer)
    tokenizer.save(str(path))


def _gpt(spec: TierSpec, vocab: int):
    """A GPT-2-shaped decoder whose forward takes and returns the KV cache (the names ONNX exports use)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(spec.dim), nn.LayerNorm(spec.dim)
            self.qkv, self.proj = nn.Linear(spec.dim, 3 * spec.dim), nn.Linear(spec.dim, spec.dim)
            self.mlp = nn.Sequential(nn.Linear(spec.dim, 4 * spec.dim), nn.GELU(approximate="tanh"),
                                     nn.Linear(4 * spec.dim, spec.dim))

        def forward(self, x, bias, past_k, past_v):
            b, s, _ = x.shape
            hd = spec.dim // spec.heads
            q, k, v = self.qkv(self.ln1(x)).split(spec.dim, dim=2)
            q, k, v = (t.view(b, s, spec.heads, hd).transpose(1, 2) for t in (q, k, v))
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + bias
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, spec.dim)
            x = x + self.proj(y)
            return x + self.mlp(self.ln2(x)), k, v

    class Gpt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, spec.dim), nn.Embedding(spec.context, spec.dim)
            self.blocks = nn.ModuleList(Block() for _ in range(spec.layers))
            self.ln_f = nn.LayerNorm(spec.dim)
            for table in (self.wte, self.wpe):  # GPT-2's initialisation: tied logits start near uniform
                nn.init.normal_(table.weight, std=0.02)

        def forward(self, input_ids, attention_mask, position_ids, *past):
            s = input_ids.shape[1]
            total = attention_mask.shape[1]
            query = torch.arange(s).unsqueeze(1) + (total - s)
            causal = torch.arange(total).unsqueeze(0) <= query  # [s, total]
            allowed = causal.unsqueeze(0).unsqueeze(0) & (attention_mask > 0).unsqueeze(1).unsqueeze(1)
            bias = (~allowed).float() * -1e9
            x = self.wte(input_ids) + self.wpe(position_ids)
            present = []
            for i, block in enumerate(self.blocks):
                x, k, v = block(x, bias, past[2 * i], past[2 * i + 1])
                present += [k, v]
            return (self.ln_f(x) @ self.wte.weight.T, *present)  # tied embeddings, as GPT-2

    return Gpt()


def _batches(ids: np.ndarray, context: int, batch: int, rng: np.random.Generator):
    starts = rng.integers(0, len(ids) - context - 1, batch)
    window = np.stack([ids[s:s + context + 1] for s in starts])
    return window[:, :-1], window[:, 1:]


def train_tier(spec: TierSpec, directory: Path, text: str, tokenizer_path: Path, progress: Progress | None = None,
               steps: int | None = None) -> ModelManifest:
    """Train one tier on `text` and export `model.onnx` + `tokenizer.json` + manifest into `directory`."""
    import torch
    from tokenizers import Tokenizer

    torch.manual_seed(spec.seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ids = np.array(tokenizer.encode(text).ids, np.int64)
    vocab = tokenizer.get_vocab_size()
    model = _gpt(spec, vocab)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(spec.seed)
    steps = steps or spec.steps
    context = min(spec.context, 128)
    empty = [torch.zeros(1, spec.heads, 0, spec.dim // spec.heads)] * (2 * spec.layers)
    started, loss_value = time.monotonic(), float("nan")
    for step in range(steps):
        x, y = _batches(ids, context, 24, rng)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        lr = 3e-3 * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / steps))
        for group in optimiser.param_groups:
            group["lr"] = lr
        past = [e.expand(x.shape[0], -1, -1, -1) for e in empty]
        logits = model(x, torch.ones_like(x), torch.arange(context).expand(x.shape[0], -1), *past)[0]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        loss_value = loss.item()
        if progress is not None:
            progress.advance(note=f"{spec.name} loss {loss_value:.2f}")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenizer_path, directory / TOKENIZER_FILE)
    _export(model, spec, directory / MODEL_FILE)
    manifest = ModelManifest(
        name=spec.name, version="1", directory=directory, graphs={"decoder": MODEL_FILE},
        metrics={"loss": loss_value, "train_seconds": time.monotonic() - started},
        extra={"format": FORMAT, "spec": asdict(spec), "price_per_1k_tokens": spec.price_per_1k_tokens,
               "tokenizer": TOKENIZER_FILE, "steps": steps})
    write_manifest(manifest)
    return manifest


def _export(model, spec: TierSpec, path: Path) -> None:
    import torch

    model.eval()
    hd = spec.dim // spec.heads
    past = [torch.zeros(1, spec.heads, 3, hd) for _ in range(2 * spec.layers)]
    inputs = (torch.zeros(1, 2, dtype=torch.int64), torch.ones(1, 5, dtype=torch.int64),
              torch.tensor([[3, 4]], dtype=torch.int64), *past)
    past_names = [f"past_key_values.{i}.{kind}" for i in range(spec.layers) for kind in ("key", "value")]
    present_names = [f"present.{i}.{kind}" for i in range(spec.layers) for kind in ("key", "value")]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes |= {name: {0: "batch", 2: "past"} for name in past_names}
    axes |= {name: {0: "batch", 2: "total"} for name in present_names}
    with torch.no_grad(), legacy_export():
        torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask", "position_ids", *past_names],
                          output_names=["logits", *present_names], dynamic_axes=axes)


def ensure_tiers(home: Path, stream: TextIO | None = None, tiers: dict[str, TierSpec] = TIERS,
                 documents: int = 6000, shipped: bool = True) -> dict[str, ModelManifest]:
    """The tiers under `home`/generator. A missing default tier is copied from the ones this package ships
    (trained by `train_tier` with the same spec, committed because they are small); anything else is
    trained here, with the tokenizer first."""
    root = home / "generator"
    found = {}
    for name, spec in tiers.items():
        directory = root / f"{name}-v{FORMAT}"
        if not (directory / "manifest.json").exists() and shipped:
            _copy_shipped(spec, directory)
        if (directory / "manifest.json").exists():
            found[name] = load_manifest(directory)
    missing = [spec for name, spec in tiers.items() if name not in found]
    if not missing:
        return found
    root.mkdir(parents=True, exist_ok=True)
    text = corpus(documents)
    tokenizer_path = root / f"tokenizer-v{FORMAT}.json"
    if not tokenizer_path.exists():
        staging_tokenizer = root / f".tokenizer-{os.getpid()}.json"
        train_tokenizer(text, missing[0].vocab, staging_tokenizer)
        staging_tokenizer.rename(tokenizer_path)
    progress = Progress("training generation tiers", sum(s.steps for s in missing), stream)
    for spec in missing:
        staging = root / f".staging-{spec.name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        train_tier(spec, staging, text, tokenizer_path, progress)
        directory = root / f"{spec.name}-v{FORMAT}"
        try:
            staging.rename(directory)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
        found[spec.name] = load_manifest(directory)
    return found


def _copy_shipped(spec: TierSpec, directory: Path) -> None:
    """Copy the packaged tier of this exact spec into `directory`, if the package has one."""
    source = SHIPPED / directory.name
    if not (source / "manifest.json").exists() or load_manifest(source).extra.get("spec") != asdict(spec):
        return
    staging = directory.parent / f".shipped-{spec.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    try:
        staging.rename(directory)
    except OSError:  # another process copied it first
        shutil.rmtree(staging, ignore_errors=True)
