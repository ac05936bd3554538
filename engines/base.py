"""The engine interface and the manifest that versions every model: its graphs, metrics, and the SHA-256 of every
file it was written with, checked before a version is served."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from errors import FailedPrecondition

__all__ = ["Engine", "ModelManifest", "file_digests", "load_manifest", "verify_files", "write_manifest", "PRECISIONS"]

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
    files: dict[str, str] = field(default_factory=dict)  # path under `directory` -> SHA-256 (hex), as written

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
        files=data.get("files", {}),
    )


def write_manifest(manifest: ModelManifest) -> None:
    """Write `manifest.json`, recording the SHA-256 of every file the directory holds now (the files the manifest's
    `files` gave are replaced: what is on disk is what the version is)."""
    data = {
        "name": manifest.name,
        "version": manifest.version,
        "graphs": manifest.graphs,
        "metrics": manifest.metrics,
        "extra": manifest.extra,
        "files": file_digests(manifest.directory),
    }
    (manifest.directory / "manifest.json").write_text(json.dumps(data, indent=1))


_BLOCK = 1 << 20
# what serving derives and writes beside a version's files (TensorRT plans, the ranker's light stage): never part
# of the version, never recorded
DERIVED = ("trt", "derived")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def file_digests(directory: Path) -> dict[str, str]:
    """The SHA-256 of every file under a version's directory, by path relative to it; but its manifest, what serving
    derives (DERIVED) and hidden files (a writer's staging)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if (path.is_file() and path.name != "manifest.json" and relative.parts[0] not in DERIVED
                and not any(part.startswith(".") for part in relative.parts)):
            found[str(relative)] = _sha256(path)
    return found


def verify_files(manifest: ModelManifest) -> None:
    """Every file the manifest records is there with its SHA-256: else FAILED_PRECONDITION naming the file (the
    version is refused). A manifest written before files were recorded records none, and nothing is checked."""
    for name, expected in manifest.files.items():
        path = manifest.directory / name
        if not path.is_file():
            raise FailedPrecondition(f"model {manifest.name}/{manifest.version}: {name} is missing from {manifest.directory}")
        found = _sha256(path)
        if found != expected:
            raise FailedPrecondition(f"model {manifest.name}/{manifest.version}: {name} does not match its manifest "
                                     f"(SHA-256 {found[:16]}..., recorded {expected[:16]}...): refused")


class Engine(Protocol):
    """Runs one graph with inputs and outputs in caller-provided memory, no copies."""

    manifest: ModelManifest
    graph: str
    precision: str

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        """Read `inputs` and write results into the preallocated `outputs`, in place."""
        ...
