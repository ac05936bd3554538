"""One interface over the inference engines: ONNX Runtime on CPU, TensorRT on GPU."""

from engines.base import Engine, ModelManifest, load_manifest
from engines.onnx import OnnxEngine

__all__ = ["Engine", "ModelManifest", "OnnxEngine", "load_manifest", "load_engine"]


def load_engine(manifest: ModelManifest, device: str = "cpu", threads: int = 2) -> Engine:
    """Open the model a manifest describes; "cpu" (ONNX Runtime) is the engine built so far."""
    if device != "cpu":
        raise ValueError(f"device is expected to be 'cpu' (the TensorRT engine is not built yet), got {device!r}")
    return OnnxEngine(manifest, threads=threads)
