"""Which models the generator serves: its trained tiers, the real tier (an imported GGUF), and ONNX exports by path."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from engines.base import ModelManifest, verify_files
from generator.llm_import import ensure_real_tier
from generator.measure import measured_footprint
from generator.residency import ModelSpec
from generator.training import TIERS, TOKENIZER_FILE, TierSpec, ensure_tiers

__all__ = ["model_specs", "parse_model_arg", "tier_spec", "REAL_TIER_CHOICES"]

REAL_TIER_CHOICES = ("int4", "int8", "fp32", "none")  # the real tier's precision; none keeps the trained large tier
CHAT_REPETITION_PENALTY = 1.2  # an instruction model's, unless its manifest names one (Hugging Face's rule)


def parse_model_arg(text: str) -> tuple[str, Path, float, int]:
    """`NAME=PATH[,price=P][,context=N]`: a GPT-2-style ONNX export (a file, or a directory holding
    model.onnx) with its tokenizer.json beside it."""
    name, _, rest = text.partition("=")
    if not name or not rest:
        raise argparse.ArgumentTypeError(f"--model expects NAME=PATH[,price=P][,context=N], got {text!r}")
    path_text, *options = rest.split(",")
    price, context = 0.001, 1024
    for option in options:
        key, _, value = option.partition("=")
        if key == "price":
            price = float(value)
        elif key == "context":
            context = int(value)
        else:
            raise argparse.ArgumentTypeError(f"--model option {key!r} is unknown; use price= or context=")
    path = Path(path_text)
    graph = path / "model.onnx" if path.is_dir() else path
    if not graph.is_file() or not (graph.parent / TOKENIZER_FILE).is_file():
        raise argparse.ArgumentTypeError(f"--model {name}: need {graph} and {graph.parent / TOKENIZER_FILE}")
    return name, graph, price, context


def tier_spec(name: str, manifest: ModelManifest) -> ModelSpec:
    """A model version (a trained tier, or an imported GGUF with its chat template) as the pool loads it, under
    `name`, with its footprint as measured. Its files are checked against its manifest first (FAILED_PRECONDITION
    naming one that does not match)."""
    verify_files(manifest)
    graph, tokenizer = manifest.path("decoder"), manifest.directory / TOKENIZER_FILE
    context = int(manifest.extra["spec"]["context"])
    template = manifest.extra.get("chat_template", "")
    # greedy decoding on a small instruction model repeats itself without a penalty; the trained tiers need none
    penalty = float(manifest.extra.get("repetition_penalty", CHAT_REPETITION_PENALTY if template else 1.0))
    return ModelSpec(name, graph, tokenizer, float(manifest.extra["price_per_1k_tokens"]), context,
                     measured_footprint(graph, tokenizer, context)["total"], template, penalty)


def model_specs(home: Path, extra: Sequence[tuple[str, Path, float, int]] = (),
                tiers: dict[str, TierSpec] = TIERS, real_tier: str = "none") -> dict[str, ModelSpec]:
    """The trained tiers (built on first use); with `real_tier` a precision, SmolLM2-135M-Instruct (imported on
    first use) is the large tier; and any models given by path."""
    if real_tier not in REAL_TIER_CHOICES:
        raise ValueError(f"real tier {real_tier!r} is not one of {REAL_TIER_CHOICES}")
    wanted = {n: t for n, t in tiers.items() if not (n == "large" and real_tier != "none")}
    specs = {name: tier_spec(name, manifest) for name, manifest in ensure_tiers(home, tiers=wanted).items()}
    if real_tier != "none":
        specs["large"] = tier_spec("large", ensure_real_tier(home, real_tier))
    for name, graph, price, context in extra:
        tokenizer = graph.parent / TOKENIZER_FILE
        specs[name] = ModelSpec(name, graph, tokenizer, price, context,
                                measured_footprint(graph, tokenizer, context)["total"])
    return specs
