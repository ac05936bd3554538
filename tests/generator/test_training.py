"""The generation tiers: the packaged ones match the default specs, install without training, and decode."""

from __future__ import annotations

import io
from dataclasses import asdict, replace
from pathlib import Path

from engines.base import load_manifest
from generator.constraints import Constraints
from generator.corpus import STAGE_END, post_prompt
from generator.decoding import generate
from generator.registry import model_specs
from generator.training import FORMAT, SHIPPED, TIERS, ensure_tiers


class TestShippedTiers:
    def test_each_default_tier_is_packaged_with_its_exact_spec(self) -> None:
        """generator/tiers holds one trained tier per default spec (the committed files are the spec's output)."""
        for name, spec in TIERS.items():
            manifest = load_manifest(SHIPPED / f"{name}-v{FORMAT}")
            assert manifest.extra["spec"] == asdict(spec)
            assert manifest.path("decoder").is_file() and (manifest.directory / "tokenizer.json").is_file()

    def test_an_empty_home_gets_the_packaged_tiers_without_training(self, tmp_path: Path) -> None:
        """No progress bar, no tokenizer training: the tiers are copied, and the small one writes on topic."""
        progress = io.StringIO()
        found = ensure_tiers(tmp_path, progress)
        assert sorted(found) == ["large", "small"] and progress.getvalue() == ""
        assert not (tmp_path / "generator" / f"tokenizer-v{FORMAT}.json").exists()
        small = model_specs(tmp_path)["small"].load()
        out = generate(small, post_prompt("music"), Constraints(max_tokens=40, stop=(STAGE_END,)), lambda _: None)
        assert "music" in out.text.lower()

    def test_a_different_spec_is_trained_not_copied(self, tmp_path: Path) -> None:
        """Only an exact spec match is taken from the package."""
        tiny = replace(TIERS["small"], dim=16, layers=1, steps=5)
        found = ensure_tiers(tmp_path, io.StringIO(), tiers={"small": tiny}, documents=200)
        assert found["small"].extra["spec"] == asdict(tiny)
