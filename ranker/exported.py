"""Exported versions of the ranking model on disk (HOME/models/ranker-mlp/N): their family name, the next version
number, and the newest one (for a learned space). Serving reads these; training writes them."""

from __future__ import annotations

from pathlib import Path

from engines.base import ModelManifest, load_manifest

__all__ = ["MODEL_NAME", "newest_model", "next_version"]

MODEL_NAME = "ranker-mlp"


def next_version(root: Path) -> str:
    versions = [int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "manifest.json").exists()]
    return str(max(versions, default=0) + 1)


def newest_model(root: Path, space: int | None = None) -> ModelManifest | None:
    """The newest exported version under `root` (HOME/models/ranker-mlp), or None; with `space`, the newest trained
    for that learned space (the one the store serves)."""
    versions = sorted((int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "manifest.json").exists()),
                      reverse=True)
    for version in versions:
        manifest = load_manifest(root / str(version))
        if manifest.extra.get("deliberately_broken"):  # a bench's or test's shuffled version is never picked
            continue
        if space is None or int(manifest.extra.get("space", 0)) == space:
            return manifest
    return None
