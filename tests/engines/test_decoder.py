"""The KV-cache decoder engine: incremental steps give the logits a full forward pass gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engines.decoder_session import Decoder
from generator.residency import ModelSpec


class TestDecoder:
    def test_stepping_with_the_cache_equals_a_full_prefill(self, specs: dict[str, ModelSpec]) -> None:
        """Prefill 3 tokens then step 4 more, against a prefill of all 7: the same next-token logits."""
        decoder = Decoder(specs["large"].graph)
        ids = [5, 17, 300, 42, 8, 99, 123]
        logits, state = decoder.start(ids[:3])
        for token in ids[3:]:
            logits = decoder.step(token, state)
        full, _ = decoder.start(ids)
        assert state.length == len(ids)
        np.testing.assert_allclose(logits, full, rtol=1e-4, atol=1e-4)

    def test_the_shape_is_read_from_the_graph(self, specs: dict[str, ModelSpec]) -> None:
        """Layers, heads and head size come from past_key_values' declared shapes."""
        decoder = Decoder(specs["large"].graph)
        assert (decoder.layers, decoder.heads, decoder.head_dim) == (2, 2, 32)
        assert decoder.kv_bytes(10) == 2 * 2 * 2 * 32 * 4 * 10

    def test_a_graph_without_a_kv_cache_is_refused(self, tmp_path: Path) -> None:
        """A model exported without past_key_values cannot decode incrementally: a clear error, at load."""
        x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "s"])
        y = helper.make_tensor_value_info("logits", TensorProto.INT64, [1, "s"])
        graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "g", [x], [y])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
        with pytest.raises(ValueError, match="no past_key_values"):
            Decoder(tmp_path / "m.onnx")
