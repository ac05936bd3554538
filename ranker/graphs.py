"""The multi-objective ranking MLP as ONNX: the naive graph, its exact decomposition, and the item tower.

All three come from one set of weights. With W1 split by feature part (user, item, context, cross):

    relu(x @ W1 + b1) = relu(user @ Wu + context @ Wc + b1  +  item @ Wi  +  cross @ Wx)
                             '--- once per request ---'     '- per item -'  '- per candidate -'

so `item @ Wi` is precomputed for every item (the item tower) and gathered by id at request time. A wide part adds
`cross @ Ww` straight to the heads' logits (wide and deep): the user.item affinity of the learned vectors reaches
the output without having to survive two hidden layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ranker.features import CONTEXT_DIM, CROSS_DIM, FEATURE_DIM, HEADS, HIDDEN_ITEM, ITEM_DIM, USER_DIM

__all__ = ["MlpWeights", "HIDDEN", "GRAPH_FORMAT", "naive_graph", "decomposed_graph", "item_tower_graph", "save",
           "quantize_int8", "weights_of"]

HIDDEN = (HIDDEN_ITEM, 256)
OPSET = 17
_U, _I, _C = USER_DIM, USER_DIM + ITEM_DIM, USER_DIM + ITEM_DIM + CONTEXT_DIM


@dataclass
class MlpWeights:
    """4,736 -> 512 -> 256 -> 4 heads, plus the wide part 128 cross features -> 4 heads, as float32 arrays
    (x @ w + b convention)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w3: np.ndarray
    b3: np.ndarray
    wide: np.ndarray | None = None  # [CROSS_DIM, heads]; None: no wide part (graph format 2)

    @classmethod
    def random(cls, seed: int = 0) -> MlpWeights:
        rng = np.random.default_rng(seed)
        dims = (FEATURE_DIM, *HIDDEN, len(HEADS))
        layers = [(rng.standard_normal((a, b)) / np.sqrt(a), rng.standard_normal(b) * 0.01) for a, b in zip(dims, dims[1:])]
        wide = rng.standard_normal((CROSS_DIM, len(HEADS))) / np.sqrt(CROSS_DIM)
        return cls.from_layers([(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in layers],
                               wide.astype(np.float32))

    @classmethod
    def from_layers(cls, layers: list[tuple[np.ndarray, np.ndarray]], wide: np.ndarray | None) -> MlpWeights:
        """From three (weight, bias) pairs in x @ w + b convention, and the wide part."""
        (w1, b1), (w2, b2), (w3, b3) = layers
        return cls(w1, b1, w2, b2, w3, b3, wide)


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _tail(w: MlpWeights, h1: str, wide: str) -> tuple[list, list]:
    """Layers 2 and 3, the wide part (`wide`: the node giving cross @ Ww, when the weights have one), the heads and
    their blend: shared by every graph that scores."""
    deep = "deep" if w.wide is not None else "logits"
    nodes = [
        helper.make_node("MatMul", [h1, "w2"], ["z2"]),
        helper.make_node("Add", ["z2", "b2"], ["a2"]),
        helper.make_node("Relu", ["a2"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w3"], ["z3"]),
        helper.make_node("Add", ["z3", "b3"], [deep]),
        *([helper.make_node("Add", ["deep", wide], ["logits"])] if w.wide is not None else []),
        helper.make_node("Sigmoid", ["logits"], ["heads"]),
        helper.make_node("MatMul", ["heads", "head_weights"], ["scores"]),
    ]
    return nodes, [_const("w2", w.w2), _const("b2", w.b2), _const("w3", w.w3), _const("b3", w.b3)]


def _outputs() -> list:
    return [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n"]),
        helper.make_tensor_value_info("heads", TensorProto.FLOAT, ["n", len(HEADS)]),
    ]


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="feedserve")
    onnx.checker.check_model(model)
    return model


def naive_graph(w: MlpWeights) -> onnx.ModelProto:
    """features [n, 4736], head_weights [4] -> scores [n], heads [n, 4]."""
    tail, consts = _tail(w, "h1", "wide_part")
    nodes = [helper.make_node("MatMul", ["features", "w1"], ["z1"])]
    if w.wide is not None:
        wide = np.zeros((FEATURE_DIM, len(HEADS)), np.float32)
        wide[_C:] = w.wide  # the wide part reads the cross columns only
        consts.append(_const("wide", wide))
        nodes.append(helper.make_node("MatMul", ["features", "wide"], ["wide_part"]))
    nodes += [
        helper.make_node("Add", ["z1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["h1"]),
        *tail,
    ]
    inputs = [
        helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", FEATURE_DIM]),
        helper.make_tensor_value_info("head_weights", TensorProto.FLOAT, [len(HEADS)]),
    ]
    return _model(helper.make_graph(nodes, "ranker_naive", inputs, _outputs(), [_const("w1", w.w1), _const("b1", w.b1), *consts]))


# 2: the decomposed graph scores a batch of requests (request_of); 3: the wide part; 4: history columns; 5: trend and
# transition columns
GRAPH_FORMAT = 5


def decomposed_graph(w: MlpWeights) -> onnx.ModelProto:
    """user [r, 2048], context [r, 512], request_of [n] (which request each candidate belongs to),
    item_table [m, 512], ids [n] (1-based), cross [n, 128], head_weights [4] -> scores [n], heads [n, 4].
    With r requests batched, each candidate gathers its own request's term."""
    tail, consts = _tail(w, "h1", "wide_part")
    nodes = [
        helper.make_node("MatMul", ["user", "wu"], ["user_part"]),
        helper.make_node("MatMul", ["context", "wc"], ["context_part"]),
        helper.make_node("Add", ["user_part", "context_part"], ["request_part0"]),
        helper.make_node("Add", ["request_part0", "b1"], ["request_parts"]),
        helper.make_node("Gather", ["request_parts", "request_of"], ["request_part"], axis=0),
        helper.make_node("Sub", ["ids", "one"], ["rows"]),
        helper.make_node("Gather", ["item_table", "rows"], ["item_part"], axis=0),
        helper.make_node("MatMul", ["cross", "wx"], ["cross_part"]),
        *([helper.make_node("MatMul", ["cross", "wide"], ["wide_part"])] if w.wide is not None else []),
        helper.make_node("Add", ["item_part", "cross_part"], ["candidate_part"]),
        helper.make_node("Add", ["candidate_part", "request_part"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["h1"]),
        *tail,
    ]
    inputs = [
        helper.make_tensor_value_info("user", TensorProto.FLOAT, ["r", USER_DIM]),
        helper.make_tensor_value_info("context", TensorProto.FLOAT, ["r", CONTEXT_DIM]),
        helper.make_tensor_value_info("request_of", TensorProto.INT64, ["n"]),
        helper.make_tensor_value_info("item_table", TensorProto.FLOAT, ["m", HIDDEN[0]]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"]),
        helper.make_tensor_value_info("cross", TensorProto.FLOAT, ["n", CROSS_DIM]),
        helper.make_tensor_value_info("head_weights", TensorProto.FLOAT, [len(HEADS)]),
    ]
    consts += [
        _const("wu", w.w1[:_U]), _const("wc", w.w1[_I:_C]), _const("wx", w.w1[_C:]), _const("b1", w.b1),
        *([_const("wide", w.wide)] if w.wide is not None else []),
        _const("one", np.array(1, dtype=np.int64)),
    ]
    return _model(helper.make_graph(nodes, "ranker_decomposed", inputs, _outputs(), consts))


def item_tower_graph(w: MlpWeights) -> onnx.ModelProto:
    """items [n, 2048] -> item_part [n, 512]: the per-item term, precomputed at load and on item changes."""
    nodes = [helper.make_node("MatMul", ["items", "wi"], ["item_part"])]
    inputs = [helper.make_tensor_value_info("items", TensorProto.FLOAT, ["n", ITEM_DIM])]
    outputs = [helper.make_tensor_value_info("item_part", TensorProto.FLOAT, ["n", HIDDEN[0]])]
    return _model(helper.make_graph(nodes, "ranker_item_tower", inputs, outputs, [_const("wi", w.w1[_U:_I])]))


def weights_of(naive: Path) -> MlpWeights:
    """The weights back out of a naive graph file (to re-export a model's other graphs)."""
    found = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(naive)).graph.initializer}
    return MlpWeights.from_layers([(found[f"w{i}"], found[f"b{i}"]) for i in (1, 2, 3)],
                                  found["wide"][_C:] if "wide" in found else None)


def save(model: onnx.ModelProto, path: Path) -> None:
    onnx.save(model, str(path))


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the MatMul weights (activations quantised per call), after ONNX Runtime's
    quantisation pre-processing: its shape inference only. Its graph optimisation is skipped, since it would fuse
    each MatMul with its Add into a Gemm, which `op_types_to_quantize` then no longer finds."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(f".{target.name}.pre.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_optimization=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        prepared.unlink(missing_ok=True)
