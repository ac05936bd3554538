"""TensorRT on GPU (the optional `.[gpu]` extra): a plan built from the same ONNX graph, bound to caller memory.

Caller buffers are registered as mapped, pinned host memory (cudaHostRegister with DEVICEMAP) and their
device pointers bound by name, so the engine reads inputs and writes outputs where the caller keeps
them (a ring slot included) without a staging copy. Registrations are kept for the buffers seen most
recently (a ring's segment is registered once), each holding its array so that the address cannot be
freed and reused while pinned; older ones are unregistered, and close() unregisters the rest. Plans are cached on disk next to the model,
keyed by graph, precision, GPU model and TensorRT version. Nothing on the CPU path imports this module.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import ModelManifest

__all__ = ["TensorRTEngine", "DEFAULT_SHAPES"]

# (min, opt, max) for each named dynamic dimension of feedserve graphs
DEFAULT_SHAPES = {"n": (1, 2_400, 20_000), "m": (1, 1 << 20, 1 << 22)}
# Pinned registrations kept at once: every binding of a run, plus the ring segment, with room to spare.
MAX_REGISTERED = 32


def _modules():
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError(f"the gpu engine needs the .[gpu] extra (tensorrt, pycuda): {exc}") from exc
    cuda.init()
    if cuda.Device.count() == 0:
        raise RuntimeError("the gpu engine needs a CUDA device; none is visible")
    return trt, cuda


class _Calibrator:
    """INT8 entropy calibration from representative input batches (TensorRT's implicit quantisation)."""

    def __new__(cls, trt, cuda, batches: list[dict[str, np.ndarray]], cache: Path):
        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.batches, self.cache = iter(batches), cache
                self.device: dict[str, object] = {}

            def get_batch_size(self) -> int:
                return 1

            def get_batch(self, names):
                batch = next(self.batches, None)
                if batch is None:
                    return None
                self.device = {name: cuda.to_device(np.ascontiguousarray(batch[name])) for name in names}
                return [int(self.device[name]) for name in names]

            def read_calibration_cache(self):
                return self.cache.read_bytes() if self.cache.exists() else None

            def write_calibration_cache(self, data) -> None:
                self.cache.write_bytes(bytes(data))

        return Calibrator()


class TensorRTEngine:
    """One TensorRT execution context over one graph of a manifest (fp32, fp16 or int8)."""

    def __init__(self, manifest: ModelManifest, graph: str, precision: str = "fp16",
                 shapes: Mapping[str, tuple[int, int, int]] | None = None,
                 calibration: Iterable[dict[str, np.ndarray]] | None = None) -> None:
        trt, cuda = _modules()
        self.trt, self.cuda = trt, cuda
        self.manifest, self.graph, self.precision = manifest, graph, precision
        self.device = cuda.Device(0)
        self.context_handle = self.device.retain_primary_context()
        self.context_handle.push()
        try:
            self.logger = trt.Logger(trt.Logger.WARNING)
            plan = self._plan(manifest.path(graph), {**DEFAULT_SHAPES, **(shapes or {})}, calibration)
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not deserialise the plan for {graph}")
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.outputs = [n for n in names if n not in self.inputs]
        finally:
            self.context_handle.pop()
        # (address, bytes) of a base array -> (the array, kept alive while pinned; its RegisteredHostMemory)
        self._registered: OrderedDict[tuple[int, int], tuple[np.ndarray, Any]] = OrderedDict()

    @property
    def registered_count(self) -> int:
        """Host buffers pinned right now (bounded by MAX_REGISTERED)."""
        return len(self._registered)

    def close(self) -> None:
        """Unregister every pinned buffer; the engine can still run (it pins again on demand)."""
        self.context_handle.push()
        try:
            while self._registered:
                self._unregister(self._registered.popitem(last=False)[1])
        finally:
            self.context_handle.pop()

    @staticmethod
    def _unregister(entry: tuple[np.ndarray, Any]) -> None:
        _array, registration = entry
        registration.unregister()

    def plan_path(self) -> Path:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.device.name().lower()).strip("-")
        return self.manifest.directory / "trt" / f"{self.graph}-{self.precision}-{gpu}-trt{self.trt.__version__}.plan"

    def _plan(self, onnx_path: Path, shapes: Mapping[str, tuple[int, int, int]],
              calibration: Iterable[dict[str, np.ndarray]] | None) -> bytes:
        trt, path = self.trt, self.plan_path()
        if path.exists():
            return path.read_bytes()
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        import onnx

        for value in onnx.load(str(onnx_path), load_external_data=False).graph.input:
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            if any(isinstance(d, str) for d in dims):
                low, opt, high = ([shapes[d][i] if isinstance(d, str) else d for d in dims] for i in range(3))
                profile.set_shape(value.name, low, opt, high)
        config.add_optimization_profile(profile)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif self.precision == "int8":
            batches = list(calibration or ())
            if not batches:
                raise ValueError("int8 on TensorRT needs calibration inputs (representative requests)")
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
            config.int8_calibrator = _Calibrator(trt, self.cuda, batches, path.with_suffix(".calibration"))
        elif self.precision != "fp32":
            raise ValueError(f"precision is expected to be fp32, fp16 or int8, got {self.precision!r}")
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError(f"TensorRT could not build {onnx_path.name} at {self.precision}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(plan))
        return bytes(plan)

    def _device_pointer(self, array: np.ndarray) -> int:
        """The device address of a host array, registering its pages (once) as mapped pinned memory."""
        if not array.flags.c_contiguous:
            raise ValueError("TensorRT bindings need C-contiguous arrays")
        base = array
        while isinstance(base.base, np.ndarray):
            base = base.base
        key = (base.ctypes.data, base.nbytes)
        entry = self._registered.get(key)
        if entry is None:
            pinned = self.cuda.register_host_memory(base, self.cuda.mem_host_register_flags.DEVICEMAP)
            # pycuda returns an array whose base is the RegisteredHostMemory (unregister, get_device_pointer)
            registration = pinned if hasattr(pinned, "unregister") else pinned.base
            entry = self._registered[key] = (base, registration)
            while len(self._registered) > MAX_REGISTERED:  # unpin the least recently bound
                self._unregister(self._registered.popitem(last=False)[1])
        else:
            self._registered.move_to_end(key)
        return int(entry[1].get_device_pointer()) + (array.ctypes.data - key[0])

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
        self.context_handle.push()
        try:
            for name in self.inputs:
                array = inputs[name]
                self.context.set_input_shape(name, array.shape)
                self.context.set_tensor_address(name, self._device_pointer(array))
            for name in self.outputs:
                if name in outputs:
                    self.context.set_tensor_address(name, self._device_pointer(outputs[name]))
            if not self.context.execute_async_v3(self.stream.handle):
                raise RuntimeError(f"TensorRT failed to run {self.graph}")
            self.stream.synchronize()
        finally:
            self.context_handle.pop()
