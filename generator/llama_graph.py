"""A Llama-family checkpoint as an ONNX decoder with a KV cache, its linear layers in fp32, int8 or int4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from generator.gguf_reader import LlamaCheckpoint

__all__ = ["PRECISIONS", "build_graph", "save_graph", "quantize_int4", "quantize_int8", "INT4_BLOCK"]

PRECISIONS = ("fp32", "int8", "int4")
INT8_BLOCK = 32
INT4_BLOCK = 32  # GGUF's Q4 block: re-quantising a Q4_1 tensor on the same blocks recovers its values
OPSET = 17
_MASKED = -1e9


def _blocks(weight: np.ndarray, block: int) -> np.ndarray:
    """`weight` [out, in] as [out, blocks, block] along the input, zero-padded to whole blocks."""
    rows, columns = weight.shape
    blocks = -(-columns // block)
    padded = np.zeros((rows, blocks * block), np.float32)
    padded[:, :columns] = weight
    return padded.reshape(rows, blocks, block)


def quantize_int4(weight: np.ndarray, block: int = INT4_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block-wise along the input: `weight` [out, in] -> (packed uint8 [out, blocks, block/2], scales [out * blocks],
    offsets [blocks, out]) with weight ~ (q - 8) * scale + offset, q in 0..15 (MatMulNBits' layout with its zero point
    at 8; the offset is added by a small matmul over the input's block sums). Each block spans its own min..max, so
    a block that came from a 4-bit GGUF block (Q4_0, Q4_1) and used its whole grid is recovered exactly."""
    grouped = _blocks(weight, block)
    low, high = grouped.min(axis=2), grouped.max(axis=2)
    scale = (high - low) / 15.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint((grouped - low[..., None]) / scale[..., None]), 0, 15).astype(np.uint8)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)  # two values a byte, the first in the low nibble
    offset = low + 8 * scale
    return packed, scale.astype(np.float32).reshape(-1), np.ascontiguousarray(offset.T, np.float32)


def quantize_int8(weight: np.ndarray, block: int = INT8_BLOCK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block-wise along the input, asymmetric: `weight` [out, in] -> (uint8 [out, blocks, block], scales
    [out * blocks], zero points uint8 [out * blocks]), weight ~ (q - zero) * scale."""
    grouped = _blocks(weight, block)
    low, high = np.minimum(grouped.min(axis=2), 0), np.maximum(grouped.max(axis=2), 0)  # zero exact
    scale = (high - low) / 255.0
    scale[scale == 0] = 1.0
    zero = np.clip(np.rint(-low / scale), 0, 255)
    q = np.clip(np.rint(grouped / scale[..., None]) + zero[..., None], 0, 255).astype(np.uint8)
    return q, scale.astype(np.float32).reshape(-1), zero.astype(np.uint8).reshape(-1)


class _Graph:
    """Collects nodes and initialisers, naming intermediate values."""

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def constant(self, name: str, array: np.ndarray | np.generic) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, kind: str, inputs: list[str], name: str | None = None, domain: str = "", **attributes) -> str:
        self._count += 1
        out = name or f"{kind.lower()}_{self._count}"
        self.nodes.append(helper.make_node(kind, inputs, [out], name=f"{kind}_{self._count}", domain=domain,
                                           **attributes))
        return out

    def linear(self, prefix: str, x: str, weight: np.ndarray, precision: str | None = None) -> str:
        """x @ weight.T, weight [out, in], in this graph's precision (or `precision`)."""
        out, columns = weight.shape
        precision = precision or self.precision
        if precision == "fp32":
            return self.op("MatMul", [x, self.constant(prefix, np.ascontiguousarray(weight.T))])
        if precision == "int8":
            q, scale, zero = quantize_int8(weight)
            return self.op("MatMulNBits", [x, self.constant(prefix + ".q", q), self.constant(prefix + ".scale", scale),
                                           self.constant(prefix + ".zero", zero)], domain="com.microsoft",
                           K=columns, N=out, bits=8, block_size=INT8_BLOCK, accuracy_level=4)
        if columns % INT4_BLOCK:  # the offset's block sums need whole blocks
            raise ValueError(f"{prefix}: input width {columns} is not a multiple of {INT4_BLOCK}")
        packed, scale, offset = quantize_int4(weight)
        product = self.op("MatMulNBits", [x, self.constant(prefix + ".q", packed), self.constant(prefix + ".scale", scale)],
                          domain="com.microsoft", K=columns, N=out, bits=4, block_size=INT4_BLOCK, accuracy_level=4)
        sums = self.op("ReduceSum", [self.op("Reshape", [x, self.constant(prefix + ".blocks",
                                                                          np.asarray([0, 0, -1, INT4_BLOCK], np.int64))]),
                                     self.constant(prefix + ".last", np.asarray([-1], np.int64))], keepdims=0)
        return self.op("Add", [product, self.op("MatMul", [sums, self.constant(prefix + ".offset", offset)])])

    def embedding(self, table: np.ndarray) -> str:
        """The rows of `input_ids`. Quantised graphs keep the table in 8 bits with a scale per block of 32 (a
        GGUF's Q8_0 table comes back exactly) and scale only the gathered rows."""
        if self.precision == "fp32":
            return self.op("Gather", [self.constant("embed", table.astype(np.float32)), "input_ids"], axis=0)
        rows, width = table.shape
        grouped = table.reshape(rows, width // INT8_BLOCK, INT8_BLOCK)
        scale = np.abs(grouped).max(axis=2) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(grouped / scale[..., None]), -127, 127).astype(np.int8).reshape(rows, width)
        rows_q = self.op("Cast", [self.op("Gather", [self.constant("embed.q", q), "input_ids"], axis=0)],
                         to=TensorProto.FLOAT)
        scales = self.op("Gather", [self.constant("embed.scale", scale.astype(np.float32)[..., None]), "input_ids"],
                         axis=0)
        blocks = self.constant("embed.blocks", np.asarray([0, 0, -1, INT8_BLOCK], np.int64))
        return self.op("Reshape", [self.op("Mul", [self.op("Reshape", [rows_q, blocks]), scales]),
                                   self.constant("embed.rows", np.asarray([0, 0, width], np.int64))])

    def split(self, x: str, sizes: list[int]) -> list[str]:
        self._count += 1
        names = [f"split_{self._count}_{i}" for i in range(len(sizes))]
        self.nodes.append(helper.make_node("Split", [x, self.constant(f"split_{self._count}.sizes", np.asarray(sizes, np.int64))],
                                           names, name=f"Split_{self._count}", axis=-1))
        return names

    def rms_norm(self, x: str, weight: np.ndarray, eps: float, prefix: str) -> str:
        # the shape ONNX Runtime fuses into one SimplifiedLayerNormalization
        two, epsilon = self.constant(f"{prefix}.two", np.float32(2.0)), self.constant(f"{prefix}.eps", np.float32(eps))
        mean = self.op("ReduceMean", [self.op("Pow", [x, two])], axes=[-1], keepdims=1)
        scaled = self.op("Div", [x, self.op("Sqrt", [self.op("Add", [mean, epsilon])])])
        return self.op("Mul", [scaled, self.constant(f"{prefix}.weight", weight.astype(np.float32))])


def build_graph(checkpoint: LlamaCheckpoint, precision: str) -> onnx.ModelProto:
    """The decoder the project's `Decoder` runs: inputs `input_ids`, `position_ids` [batch, tokens] and
    `past_key_values.N.key|value` [batch, kv_heads, past, head_dim]; outputs `logits` [batch, tokens, vocab] and
    `present.N.key|value`. Rotary on rotate-half pairs; each group of query heads attends to its KV head."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    c = checkpoint.config
    d, group = c.head_dim, c.heads // c.kv_heads
    kv = c.kv_heads * d
    g = _Graph(precision)
    i64 = lambda name, values: g.constant(name, np.asarray(values, np.int64))  # noqa: E731

    x = g.embedding(checkpoint.embed)
    # rotary angles and the causal mask, once for every layer
    positions = g.op("Cast", ["position_ids"], to=TensorProto.FLOAT)
    inv_freq = (c.rope_base ** (-np.arange(d // 2, dtype=np.float64) * 2.0 / d)).astype(np.float32)
    angles = g.op("Mul", [g.op("Unsqueeze", [positions, i64("axis_last", [-1])]), g.constant("inv_freq", inv_freq)])
    angles = g.op("Concat", [angles, angles], axis=-1)
    cos = g.op("Unsqueeze", [g.op("Cos", [angles]), i64("axis_heads", [1])])  # [batch, 1, tokens, head_dim]
    sin = g.op("Unsqueeze", [g.op("Sin", [angles]), i64("axis_heads_s", [1])])
    past_len = g.op("Gather", [g.op("Shape", ["past_key_values.0.key"]), i64("dim_past", 2)], axis=0)
    new_len = g.op("Gather", [g.op("Shape", ["input_ids"]), i64("dim_tokens", 1)], axis=0)
    total = g.op("Add", [past_len, new_len])
    key_pos = g.op("Cast", [g.op("Range", [i64("zero", 0), total, i64("one", 1)])], to=TensorProto.FLOAT)
    later = g.op("Greater", [key_pos, g.op("Unsqueeze", [positions, i64("axis_q", [-1])])])  # [batch, tokens, total]
    mask = g.op("Where", [later, g.constant("masked", np.float32(_MASKED)), g.constant("open", np.float32(0.0))])
    mask = g.op("Unsqueeze", [mask, i64("axis_group", [1, 2])])  # [batch, 1, 1, tokens, total]
    half = d // 2
    heads_shape, kv_shape = i64("heads_shape", [0, 0, c.heads, d]), i64("kv_shape", [0, 0, c.kv_heads, d])
    grouped_shape = i64("grouped_shape", [0, c.kv_heads, group, -1, d])
    merged_shape = i64("merged_shape", [0, c.kv_heads, -1, d])
    out_shape = i64("out_shape", [0, 0, c.width])
    scale = g.constant("attn_scale", np.float32(1.0 / np.sqrt(d)))
    starts, mids, ends = i64("s0", [0]), i64("s_half", [half]), i64("s_end", [d])
    last = i64("axis_d", [-1])

    def rotary(t: str) -> str:
        first, second = g.op("Slice", [t, starts, mids, last]), g.op("Slice", [t, mids, ends, last])
        rotated = g.op("Concat", [g.op("Neg", [second]), first], axis=-1)
        return g.op("Add", [g.op("Mul", [t, cos]), g.op("Mul", [rotated, sin])])

    outputs = []
    for n, block in enumerate(checkpoint.blocks):
        p = f"layers.{n}"
        h = g.rms_norm(x, block["attn_norm"], c.rms_eps, f"{p}.attn_norm")
        # one matmul for Q, K and V (one read of the input, one kernel launch), split after
        qkv = g.linear(f"{p}.qkv", h, np.concatenate([block["q"], block["k"], block["v"]]))
        q, k, v = g.split(qkv, [c.width, kv, kv])
        q = g.op("Transpose", [g.op("Reshape", [q, heads_shape])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, kv_shape])], perm=[0, 2, 1, 3])
        v = g.op("Transpose", [g.op("Reshape", [v, kv_shape])], perm=[0, 2, 1, 3])
        q, k = g.op("Mul", [rotary(q), scale]), rotary(k)
        key = g.op("Concat", [f"past_key_values.{n}.key", k], f"present.{n}.key", axis=2)
        value = g.op("Concat", [f"past_key_values.{n}.value", v], f"present.{n}.value", axis=2)
        outputs += [key, value]
        # query heads grouped by the KV head they share: [batch, kv_heads, group * tokens, head_dim]
        scores = g.op("MatMul", [g.op("Reshape", [q, merged_shape]), g.op("Transpose", [key], perm=[0, 1, 3, 2])])
        scores = g.op("Add", [g.op("Reshape", [scores, g.op("Concat", [i64(f"{p}.g0", [0, c.kv_heads, group]),
                                                                        g.op("Shape", [mask], start=3)], axis=0)]),
                              mask])
        weights = g.op("Softmax", [scores], axis=-1)
        attended = g.op("MatMul", [g.op("Reshape", [weights, g.op("Concat", [i64(f"{p}.m0", [0, c.kv_heads, -1]),
                                                                              g.op("Shape", [key], start=2, end=3)],
                                                                       axis=0)]), value])
        attended = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [attended, grouped_shape])], perm=[0, 3, 1, 2, 4]),
                                    out_shape])
        x = g.op("Add", [x, g.linear(f"{p}.o", attended, block["o"])])
        h = g.rms_norm(x, block["ffn_norm"], c.rms_eps, f"{p}.ffn_norm")
        gate, up = g.split(g.linear(f"{p}.gate_up", h, np.concatenate([block["gate"], block["up"]])), [c.ffn, c.ffn])
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        x = g.op("Add", [x, g.linear(f"{p}.down", g.op("Mul", [silu, up]), block["down"])])
    x = g.rms_norm(x, checkpoint.norm, c.rms_eps, "norm")
    # the output layer stays 8-bit in the int4 graph: its logits are the sampler's input, and a GGUF's tied
    # embedding is usually 8-bit (Q8_0) already, so 4 bits would lose what the file kept
    g.op("Identity", [g.linear("lm_head", x, checkpoint.lm_head, "int8" if precision == "int4" else None)], "logits")

    float_tensor = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "tokens"])]
    for n in range(c.layers):
        for part in ("key", "value"):
            inputs.append(float_tensor(f"past_key_values.{n}.{part}", ["batch", c.kv_heads, "past", d]))
    graph_outputs = [float_tensor("logits", ["batch", "tokens", c.vocab])]
    graph_outputs += [float_tensor(name, ["batch", c.kv_heads, "total", d]) for name in outputs]
    graph = helper.make_graph(g.nodes, checkpoint.name or "llama", inputs, graph_outputs, g.initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, producer_name="feedserve import-gguf")


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Write the graph with its weights beside it in `<name>.data` (one file, read by ONNX Runtime at load)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
