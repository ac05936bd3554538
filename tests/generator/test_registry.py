"""Models given by path: any GPT-2-style ONNX export with its tokenizer.json is served beside the tiers."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from generator.constraints import Constraints
from generator.decoding import generate
from generator.registry import model_specs, parse_model_arg
from generator.residency import ModelSpec
from generator.training import MODEL_FILE, TOKENIZER_FILE


@pytest.fixture
def export(tmp_path: Path, specs: dict[str, ModelSpec]) -> Path:
    """A directory as `optimum-cli export onnx` leaves one: model.onnx and tokenizer.json, nothing else."""
    directory = tmp_path / "custom"
    directory.mkdir()
    shutil.copy(specs["small"].graph, directory / MODEL_FILE)
    shutil.copy(specs["small"].tokenizer, directory / TOKENIZER_FILE)
    return directory


class TestModelsByPath:
    def test_a_directory_export_is_served_under_its_name_with_its_price(self, generation_home: Path,
                                                                         export: Path) -> None:
        """NAME=PATH,price=P,context=N adds a model the pool can load and decode with."""
        specs = model_specs(generation_home, [parse_model_arg(f"custom={export},price=0.5,context=128")])
        custom = specs["custom"]
        assert (custom.price_per_1k_tokens, custom.context, custom.graph) == (0.5, 128, export / MODEL_FILE)
        out = generate(custom.load(), "Write a post about music.\n", Constraints(max_tokens=8), lambda _: None)
        assert out.model == "custom" and out.tokens_out == 8

    def test_a_path_without_a_tokenizer_is_refused_naming_what_is_missing(self, export: Path) -> None:
        """The error names both files the model needs."""
        (export / TOKENIZER_FILE).unlink()
        with pytest.raises(argparse.ArgumentTypeError, match="tokenizer.json"):
            parse_model_arg(f"custom={export}")

    def test_an_unknown_option_is_refused(self, export: Path) -> None:
        """Only price= and context= are understood."""
        with pytest.raises(argparse.ArgumentTypeError, match="'temperature' is unknown"):
            parse_model_arg(f"custom={export},temperature=0.7")
