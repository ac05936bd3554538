"""A GPT-2-style causal decoder in ONNX Runtime, with its KV cache kept in ONNX Runtime values between steps."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engines.onnx import session_options

__all__ = ["Decoder", "DecoderState"]

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


@dataclass
class DecoderState:
    """One sequence's KV cache (ONNX Runtime values, never copied to numpy) and its length."""

    past: list[ort.OrtValue]
    length: int


class Decoder:
    """Any decoder exported the way Hugging Face's GPT-2 ONNX exports are: inputs `input_ids`, optional
    `attention_mask` and `position_ids`, `past_key_values.N.key|value` [batch, heads, past, head_dim];
    outputs `logits` then `present.N.key|value`. Layers, heads and head size are read from the graph."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"decoder graph {self.path} does not exist")
        self.session = ort.InferenceSession(str(self.path), sess_options=session_options(threads),
                                            providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "input_ids" not in inputs:
            raise ValueError(f"{self.path} is not a GPT-2-style decoder: it has no input_ids input")
        matched = {n: m for n in inputs if (m := _PAST.match(n)) is not None}
        self.past_names = sorted(matched, key=lambda n: (int(matched[n][1]), matched[n][2] != "key"))
        if not self.past_names:
            raise ValueError(f"{self.path} has no past_key_values inputs: export it with its KV cache")
        shape = inputs[self.past_names[0]].shape
        if not (isinstance(shape[1], int) and isinstance(shape[3], int)):
            raise ValueError(f"{self.path}: past_key_values must have fixed heads and head size, got {shape}")
        self.layers, self.heads, self.head_dim = len(self.past_names) // 2, shape[1], shape[3]
        self.uses_mask, self.uses_positions = "attention_mask" in inputs, "position_ids" in inputs
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_names = ["logits", *(n.replace("past_key_values", "present") for n in self.past_names)]
        missing = set(self.output_names) - set(outputs)
        if missing:
            raise ValueError(f"{self.path} lacks outputs {sorted(missing)}")
        self._empty = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, self.heads, 0, self.head_dim), np.float32))

    def kv_bytes(self, tokens: int) -> int:
        """Bytes of the KV cache for one sequence of `tokens` tokens."""
        return 2 * self.layers * self.heads * self.head_dim * 4 * tokens

    def start(self, ids: list[int], every_position: bool = False) -> tuple[np.ndarray, DecoderState]:
        """Run the prompt (prefill): the next-token logits (at every position of the prompt with `every_position`,
        [tokens, vocab]) and the state to continue from."""
        if not ids:
            raise ValueError("prompt is expected to have at least one token")
        state = DecoderState([self._empty] * len(self.past_names), 0)
        return self._run(np.asarray([ids], np.int64), state, last_only=not every_position), state

    def step(self, token: int, state: DecoderState) -> np.ndarray:
        """Append one token; the next-token logits."""
        return self._run(np.asarray([[token]], np.int64), state)

    def logits(self, ids: list[int]) -> np.ndarray:
        """Every position's next-token logits for a whole text [tokens, vocab], from an empty cache."""
        return self.start(ids, every_position=True)[0]

    def _run(self, ids: np.ndarray, state: DecoderState, last_only: bool = True) -> np.ndarray:
        count = ids.shape[1]
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        if self.uses_mask:
            binding.bind_cpu_input("attention_mask", np.ones((1, state.length + count), np.int64))
        if self.uses_positions:
            binding.bind_cpu_input("position_ids", np.arange(state.length, state.length + count, dtype=np.int64)[None])
        for name, value in zip(self.past_names, state.past):
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cpu")  # ONNX Runtime allocates; the cache stays an OrtValue
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        state.past, state.length = list(values[1:]), state.length + count
        logits = values[0].numpy()[0]
        return logits[-1] if last_only else logits
