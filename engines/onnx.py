"""ONNX Runtime on CPU, with inputs and outputs bound to caller memory through IOBinding."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from engines.base import ModelManifest

__all__ = ["OnnxEngine"]


class OnnxEngine:
    """One InferenceSession; `run` binds numpy buffers by address so nothing is copied."""

    def __init__(self, manifest: ModelManifest, threads: int = 2) -> None:
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(manifest.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        binding = self.session.io_binding()
        for name, array in inputs.items():
            binding.bind_input(name, "cpu", 0, array.dtype.type, array.shape, _address(array, name))
        for name, array in outputs.items():
            if not array.flags.writeable:
                raise ValueError(f"output {name} is expected to be writable")
            binding.bind_output(name, "cpu", 0, array.dtype.type, array.shape, _address(array, name))
        self.session.run_with_iobinding(binding)


def _address(array: np.ndarray, name: str) -> int:
    # IOBinding reads raw memory: the buffer must be dense and in C order.
    if not array.flags.c_contiguous:
        raise ValueError(f"tensor {name} is expected to be C-contiguous")
    return array.ctypes.data
