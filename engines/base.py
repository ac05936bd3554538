"""The engine interface and the manifest that versions every model file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["Engine", "ModelManifest", "load_manifest", "write_manifest"]


@dataclass(frozen=True)
class ModelManifest:
    """What a model file is: name, version, precision, and the metrics it was trained to."""

    name: str
    version: str
    path: Path
    precision: str = "fp32"
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)


def load_manifest(directory: Path) -> ModelManifest:
    """Read `manifest.json` in a model version directory."""
    data = json.loads((directory / "manifest.json").read_text())
    return ModelManifest(
        name=data["name"],
        version=str(data["version"]),
        path=directory / data["file"],
        precision=data.get("precision", "fp32"),
        metrics=data.get("metrics", {}),
        extra=data.get("extra", {}),
    )


def write_manifest(manifest: ModelManifest) -> None:
    data = {
        "name": manifest.name,
        "version": manifest.version,
        "file": manifest.path.name,
        "precision": manifest.precision,
        "metrics": manifest.metrics,
        "extra": manifest.extra,
    }
    (manifest.path.parent / "manifest.json").write_text(json.dumps(data, indent=1))


class Engine(Protocol):
    """Runs one model with inputs and outputs in caller-provided memory, no copies."""

    manifest: ModelManifest

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """Read `inputs` and write results into the preallocated `outputs`, in place."""
        ...
