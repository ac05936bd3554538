"""The ranking model: the decomposition is exact, int8 keeps the order, training beats popularity."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from catalog import open_store
from engines import load_manifest
from ranker import graphs
from ranker.features import CONTEXT_DIM, CROSS_DIM, ITEM_DIM, USER_DIM, assemble
from tests.stack import ranker_for


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank = lambda x: np.argsort(np.argsort(x)).astype(np.float64)  # noqa: E731
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


class TestDecomposition:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_decomposed_graph_equals_the_naive_full_model_on_random_inputs(self, seed: int) -> None:
        """Random weights, random dense inputs, 2,400 candidates: relative error of scores and heads <= 1e-5."""
        rng = np.random.default_rng(seed)
        weights = graphs.MlpWeights.random(seed)
        items = rng.standard_normal((3000, ITEM_DIM)).astype(np.float32)
        table = _session(graphs.item_tower_graph(weights)).run(None, {"items": items})[0]
        ids = rng.choice(3000, 2400, replace=False).astype(np.int64) + 1
        user = rng.standard_normal((1, USER_DIM)).astype(np.float32)
        context = rng.standard_normal((1, CONTEXT_DIM)).astype(np.float32)
        cross = rng.standard_normal((2400, CROSS_DIM)).astype(np.float32)
        blend = rng.random(4).astype(np.float32)
        naive = _session(graphs.naive_graph(weights)).run(
            None, {"features": assemble(user, items[ids - 1], context, cross), "head_weights": blend})
        decomposed = _session(graphs.decomposed_graph(weights)).run(
            None, {"user": user, "context": context, "request_of": np.zeros(2400, np.int64), "item_table": table,
                   "ids": ids, "cross": cross, "head_weights": blend})
        for full, split in zip(naive, decomposed):
            assert np.linalg.norm(full - split) / np.linalg.norm(full) <= 1e-5

    def test_a_batch_of_requests_scores_each_as_if_alone(self) -> None:
        """Three requests in one run (the dynamic batch) give each request the scores it gets alone."""
        rng = np.random.default_rng(9)
        weights = graphs.MlpWeights.random(3)
        session = _session(graphs.decomposed_graph(weights))
        table = rng.standard_normal((500, 512)).astype(np.float32)
        users = rng.standard_normal((3, USER_DIM)).astype(np.float32)
        contexts = rng.standard_normal((3, CONTEXT_DIM)).astype(np.float32)
        sizes = [40, 7, 100]
        ids = [rng.integers(1, 501, n).astype(np.int64) for n in sizes]
        cross = [rng.standard_normal((n, CROSS_DIM)).astype(np.float32) for n in sizes]
        blend = np.ones(4, np.float32)
        alone = [session.run(["scores"], {"user": users[i:i + 1], "context": contexts[i:i + 1],
                                          "request_of": np.zeros(sizes[i], np.int64), "item_table": table,
                                          "ids": ids[i], "cross": cross[i], "head_weights": blend})[0] for i in range(3)]
        together = session.run(["scores"], {"user": users, "context": contexts,
                                            "request_of": np.repeat(np.arange(3), sizes), "item_table": table,
                                            "ids": np.concatenate(ids), "cross": np.concatenate(cross),
                                            "head_weights": blend})[0]
        np.testing.assert_allclose(together, np.concatenate(alone), rtol=1e-5, atol=1e-6)


class TestQuality:
    def test_int8_scores_keep_the_fp32_order(self, catalog, manifest) -> None:
        """Spearman correlation of int8 and fp32 scores over a real request's candidates is >= 0.99."""

        fp32 = ranker_for(catalog, manifest, cascade_keep=0)  # the full model scores every candidate
        int8 = ranker_for(catalog, manifest, precision="int8", cascade_keep=0)
        from feedserve.v1 import ranker_pb2
        from mesh.methods import HeapOutputs

        user = catalog.vector(12)
        scores = []
        for ranker in (fp32, int8):
            outputs = HeapOutputs()
            ranker.rank(ranker_pb2.RankRequest(user_id=12, k=10, return_all_scores=True), {"user_vector": user}, outputs)
            scores.append(outputs.arrays["scores"])
        assert len(scores[0]) > 1000
        assert spearman(*scores) >= 0.99

    def test_the_manifest_names_its_learned_space_and_what_it_learned(self, catalog, manifest) -> None:
        """A trained version names the learned space it was trained for (the one the catalog serves), its width,
        the sequence it read up to, its cold-start vector and what ALS learned."""
        extra = manifest.extra
        assert extra["vector_dim"] == 384 and extra["trained_to_sequence"] > 0
        assert extra["space"] == open_store(catalog.url).active_space() > 0
        assert len(extra["cold_start"]) == 384 and abs(np.linalg.norm(extra["cold_start"]) - 1) < 1e-4
        assert extra["vectors"]["items_learned"] > 0 and extra["vectors"]["users_learned"] > 0


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "FEEDSERVE_HOME": str(home)})


class TestTrainCommand:
    @pytest.mark.timeout(600)  # trains twice (evaluation, then everything) and fits four baselines
    def test_train_evaluates_against_the_baselines_and_exports_a_version_with_its_space(self, catalog, tmp_path: Path) -> None:
        """`feedserve train` scores the served pipeline beside popularity, recent popularity, ALS, EASE, item-kNN and
        GRU4Rec on a per-user split, exports the graphs, and stages (does not publish) a new learned space."""
        url = catalog.copy(tmp_path / "store")
        served_before = open_store(url).active_space()
        result = _cli("train", "--store", url, "--quick", "--epochs", "1", "--force", home=tmp_path)
        assert result.returncode == 0, result.stderr
        for row in ("served", "popularity", "recent popularity", "ALS", "EASE", "item-kNN", "GRU4Rec", "retrieval alone",
                    "recall@100", "served / best baseline", "new users"):
            assert row in result.stdout
        exported = tmp_path / "models" / "ranker-mlp" / "1"
        for graph in ("naive.onnx", "decomposed.onnx", "decomposed.int8.onnx", "item_tower.onnx", "manifest.json"):
            assert (exported / graph).exists()
        manifest = load_manifest(exported)
        store = open_store(url)
        assert manifest.extra["trained_to_sequence"] == store.sequence()
        assert manifest.extra["space"] > served_before == store.active_space()  # staged, served by `feedserve up`
        for key in ("ndcg20", "ndcg20_popularity", "ndcg20_recent_popularity", "ndcg20_als", "recall100_retrieval"):
            assert 0.0 <= manifest.metrics[key] <= 1.0

    def test_an_empty_store_is_refused_with_the_reason(self, tmp_path: Path) -> None:
        """Training needs events: an empty store fails with a message, not a traceback."""
        result = _cli("train", "--store", str(tmp_path / "empty.db"), home=tmp_path)
        assert result.returncode == 1 and "at least 100 are needed" in result.stderr


class TestHeadWeights:
    def test_head_weights_change_the_blend_and_bad_ones_are_refused(self, catalog, manifest) -> None:
        """Only the 'share' head weighted: the served scores equal that head's probability (no blend after it)."""
        import argparse

        from feedserve.v1 import ranker_pb2
        from mesh.methods import HeapOutputs
        from ranker.__main__ import parse_head_weights

        weights = parse_head_weights("click=0,like=0,dwell=0,share=1")
        ranker = ranker_for(catalog, manifest, head_weights=weights, follow_weight=0.0)
        out = HeapOutputs()
        ranker.rank(ranker_pb2.RankRequest(user_id=1, k=5, return_all_scores=True),
                    {"user_vector": catalog.vector(1)}, out)
        assert ranker.head_weights.tolist() == [0, 0, 0, 1]
        assert (out.arrays["scores"] > 0).all() and (out.arrays["scores"] < 1).all()
        with pytest.raises(argparse.ArgumentTypeError, match="not one of"):
            parse_head_weights("clicks=1")
        with pytest.raises(argparse.ArgumentTypeError, match="finite"):
            parse_head_weights("like=nan")


def test_int8_quantisation_is_preprocessed_and_quantises_every_matmul(tmp_path, caplog) -> None:
    """ONNX Runtime's pre-processing runs first (so it does not warn that it did not), and every MatMul is still
    quantised (its graph optimisation, which would fuse MatMul and Add into a Gemm, is skipped)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{n}") for n in range(2)]
    bias = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w1"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], [*weights, bias])
    source, target = tmp_path / "mlp.onnx", tmp_path / "mlp.int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    with caplog.at_level(logging.WARNING):
        graphs.quantize_int8(source, target)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    ops = [node.op_type for node in onnx.load(str(target)).graph.node]
    assert ops.count("MatMulInteger") == 2 and "MatMul" not in ops
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.int8.onnx", "mlp.onnx"]  # nothing left beside
