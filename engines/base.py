"""The engine interface and the manifest that versions every model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["Engine", "ModelManifest", "load_manifest", "write_manifest", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ModelManifest:
    """A versioned model: its ONNX graphs by role ("decomposed", "decomposed_int8", ...) and its metrics."""

    name: str
    version: str
    directory: Path
    graphs: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # JSON: whatever each model kind records

    def path(self, graph: str) -> Path:
        if graph not in self.graphs:
            raise KeyError(f"model {self.name}/{self.version} has no graph {graph!r}; it has {sorted(self.graphs)}")
        return self.directory / self.graphs[graph]


def load_manifest(directory: Path) -> ModelManifest:
    """Read `manifest.json` in a model version directory."""
    data = json.loads((directory / "manifest.json").read_text())
    return ModelManifest(
        name=data["name"],
        version=str(data["version"]),
        directory=directory,
        graphs=dict(data["graphs"]),
        metrics=data.get("metrics", {}),
        extra=data.get("extra", {}),
    )


def write_manifest(manifest: ModelManifest) -> None:
    data = {
        "name": manifest.name,
        "version": manifest.version,
        "graphs": manifest.graphs,
        "metrics": manifest.metrics,
        "extra": manifest.extra,
    }
    (manifest.directory / "manifest.json").write_text(json.dumps(data, indent=1))


class Engine(Protocol):
    """Runs one graph with inputs and outputs in caller-provided memory, no copies."""

    manifest: ModelManifest
    graph: str
    precision: str

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """Read `inputs` and write results into the preallocated `outputs`, in place."""
        ...
