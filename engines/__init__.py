"""One interface over the inference engines: ONNX Runtime on CPU, TensorRT on GPU (the .[gpu] extra)."""

from engines.base import PRECISIONS, Engine, ModelManifest, load_manifest
from engines.onnx import OnnxEngine

__all__ = ["Engine", "ModelManifest", "OnnxEngine", "PRECISIONS", "load_manifest", "load_engine"]


def load_engine(manifest: ModelManifest, graph: str, precision: str = "fp32", device: str = "cpu",
                threads: int = 2) -> Engine:
    """Open one graph of a model: "cpu" runs ONNX Runtime, "gpu" builds (or loads) a TensorRT plan."""
    if device == "cpu":
        return OnnxEngine(manifest, graph, precision, threads=threads)
    if device == "gpu":
        from engines.tensorrt import TensorRTEngine  # the optional extra; never imported on the CPU path

        return TensorRTEngine(manifest, graph, precision)
    raise ValueError(f"device is expected to be 'cpu' or 'gpu', got {device!r}")
