"""The engine interface: ONNX Runtime writes into caller buffers; precisions and devices are checked."""

from __future__ import annotations

import numpy as np
import pytest

from engines import load_engine
from ranker.features import HIDDEN_ITEM, ITEM_DIM


class TestOnnxEngine:
    def test_outputs_land_in_the_callers_buffer(self, manifest) -> None:
        """run() writes into the array it was given (same address), no result copy."""
        engine = load_engine(manifest, "item_tower")
        items = np.random.default_rng(0).random((16, ITEM_DIM)).astype(np.float32)
        out = np.full((16, HIDDEN_ITEM), np.nan, np.float32)
        address = out.ctypes.data
        engine.run({"items": items}, {"item_part": out})
        assert out.ctypes.data == address and np.isfinite(out).all()

    def test_int8_graph_is_loaded_for_int8(self, manifest) -> None:
        engine = load_engine(manifest, "decomposed", "int8")
        assert engine.precision == "int8"
        assert any("Integer" in n.op_type or "Quant" in n.op_type
                   for n in __import__("onnx").load(str(manifest.path("decomposed_int8"))).graph.node)

    def test_fp16_on_cpu_is_refused_with_the_reason(self, manifest) -> None:
        with pytest.raises(ValueError, match="fp16 needs the TensorRT engine"):
            load_engine(manifest, "decomposed", "fp16")

    def test_unknown_graph_and_device_are_named(self, manifest) -> None:
        with pytest.raises(KeyError, match="no graph 'nope'"):
            load_engine(manifest, "nope")
        with pytest.raises(ValueError, match="device"):
            load_engine(manifest, "decomposed", device="tpu")

    def test_non_contiguous_input_is_refused(self, manifest) -> None:
        engine = load_engine(manifest, "item_tower")
        items = np.zeros((16, ITEM_DIM * 2), np.float32)[:, ::2]
        with pytest.raises(ValueError, match="C-contiguous"):
            engine.run({"items": items}, {"item_part": np.empty((16, HIDDEN_ITEM), np.float32)})


def _gpu_or_skip() -> None:
    try:
        import pycuda.driver as cuda
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("TensorRT tests need the .[gpu] extra (tensorrt, pycuda); not installed on this machine")
    cuda.init()
    if cuda.Device.count() == 0:
        pytest.skip("TensorRT tests need a CUDA device; none is visible")


class TestTensorRTEngine:
    @pytest.mark.parametrize("precision", ["fp32", "fp16"])
    def test_tensorrt_matches_onnx_runtime_on_the_decomposed_graph(self, catalog, manifest, precision) -> None:
        """The same graph through TensorRT scores within float tolerance of ONNX Runtime (fp16: rank-equal)."""
        _gpu_or_skip()
        from tests.stack import ranker_for

        cpu = ranker_for(catalog, manifest)
        gpu = ranker_for(catalog, manifest, device="gpu", precision=precision)
        rng = np.random.default_rng(1)
        inputs = {"user": rng.standard_normal((1, 2048)).astype(np.float32),
                  "context": np.zeros((1, 512), np.float32), "item_table": cpu.item_table,
                  "ids": np.arange(1, 2401, dtype=np.int64), "cross": rng.standard_normal((2400, 128)).astype(np.float32),
                  "head_weights": cpu.head_weights}
        a, b = np.empty(2400, np.float32), np.empty(2400, np.float32)
        cpu.engine.run(inputs, {"scores": a, "heads": np.empty((2400, 4), np.float32)})
        gpu.engine.run(inputs, {"scores": b, "heads": np.empty((2400, 4), np.float32)})
        tolerance = 1e-4 if precision == "fp32" else 2e-2
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < tolerance
        assert gpu.engine.plan_path().exists()

    def test_pinned_host_buffers_stay_bounded_and_close_unpins_them(self, catalog, manifest) -> None:
        """Each run with new arrays pins them; the oldest registrations are released past MAX_REGISTERED
        (before, every new array stayed pinned for the life of the engine), and close() releases the rest."""
        _gpu_or_skip()
        from engines.tensorrt import MAX_REGISTERED
        from tests.stack import ranker_for

        gpu = ranker_for(catalog, manifest, device="gpu", precision="fp32")
        rng = np.random.default_rng(2)
        for _ in range(3 * MAX_REGISTERED):
            inputs = {"user": rng.standard_normal((1, 2048)).astype(np.float32),
                      "context": np.zeros((1, 512), np.float32), "item_table": gpu.item_table,
                      "ids": np.arange(1, 65, dtype=np.int64), "cross": rng.standard_normal((64, 128)).astype(np.float32),
                      "head_weights": gpu.head_weights}
            gpu.engine.run(inputs, {"scores": np.empty(64, np.float32), "heads": np.empty((64, 4), np.float32)})
            assert gpu.engine.registered_count <= MAX_REGISTERED
        gpu.engine.close()
        assert gpu.engine.registered_count == 0
