"""ONNX Runtime on CPU, with inputs and outputs bound to caller memory through IOBinding."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from engines.base import ModelManifest
from mesh.timing import ThreadGroup, threads_started_by

__all__ = ["OnnxEngine", "session_options"]


def session_options(threads: int, spin: bool = False) -> ort.SessionOptions:
    """CPU session options shared by every engine: `threads` intra-op threads, one inter-op, full graph optimisation."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning pools keep cores busy after each run; with several sessions, the ring dispatcher and
    # gRPC threads on 2 cores, that steals more than it saves (measured: 7.3 ms vs 3.3 ms alternating).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxEngine:
    """One InferenceSession over one graph of a manifest; `run` binds numpy buffers by address, no copies.

    Precision picks the graph file: fp32 is `graph`, int8 is `graph`_int8 (quantised at export).
    fp16 is a GPU precision: ONNX Runtime's CPU kernels would upcast it, so it is refused here.
    """

    def __init__(self, manifest: ModelManifest, graph: str, precision: str = "fp32", threads: int = 2,
                 spin: bool = False) -> None:
        if precision == "fp16":
            raise ValueError("precision fp16 needs the TensorRT engine (device='gpu'); on CPU use fp32 or int8")
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision is expected to be fp32, fp16 or int8, got {precision!r}")
        self.manifest, self.graph, self.precision = manifest, graph, precision
        path = manifest.path(graph if precision == "fp32" else f"{graph}_{precision}")
        # the intra-op pool's threads, so that a run's CPU can be charged to the requests it served
        self.session, pool = threads_started_by(lambda: ort.InferenceSession(
            str(path), sess_options=session_options(threads, spin), providers=["CPUExecutionProvider"]))
        self.threads: ThreadGroup = pool
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
