"""Ranking at full scale: retrieval, the naive full model, the decomposed model in fp32 and int8, and the cascade
(the light stage over every candidate, the decomposed model over the best 300), side by side; and the cascade for a
user with a history (five recent likes: the cross part's history columns computed over the kept candidates), so
that `history_cost` is what the user's recent behaviour adds to a ranking.

2,400 candidates x 4,736 features per request over 1,000,000 items (--quick: 200,000), on 2 threads.
The catalog is the simulator's, imported and encoded as `feedserve up` does (prepared once, cached under HOME).
The naive path assembles the whole [2400, 4736] feature matrix in numpy and runs the full MLP; the
decomposed path computes the user and context terms once, gathers the precomputed item terms, and runs
the per-candidate cross term and the upper layers. Both include their feature work.

    python bench/rank.py [--quick] [--requests N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from bench.common import (  # noqa: E402
    machine,
    prepare_catalog,  # noqa: E402
    record,
    result_line,
)
from catalog import open_store, preset_schema  # noqa: E402
from feedserve.v1 import ranker_pb2  # noqa: E402
from mesh.config import default_home  # noqa: E402
from mesh.methods import HeapOutputs  # noqa: E402
from mesh.percentiles import p50_p99  # noqa: E402
from ranker.exported import MODEL_NAME, newest_model  # noqa: E402
from ranker.features import FEATURE_DIM, HEADS, assemble  # noqa: E402
from ranker.service import Ranker  # noqa: E402

CANDIDATES = 2_400


def p50_ms(samples: list[float]) -> float:
    return p50_p99(samples)[0] * 1e3


def p99_ms(samples: list[float]) -> float:
    return p50_p99(samples)[1] * 1e3


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank = lambda x: np.argsort(np.argsort(x)).astype(np.float64)  # noqa: E731
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200,000 items and fewer requests")
    parser.add_argument("--items", type=int, help="items in the catalog (default 1,000,000; quick 200,000)")
    parser.add_argument("--requests", type=int, help="timed requests per path (default 200; quick 40)")
    parser.add_argument("--home", type=Path, help="where the bench catalog is prepared (default: HOME/bench-catalog-N)")
    args = parser.parse_args()
    items = args.items or (200_000 if args.quick else 1_000_000)
    requests = args.requests or (40 if args.quick else 200)

    home = args.home or default_home() / f"bench-catalog-{items}"
    store = prepare_catalog(home, items, 50_000, 400_000)
    manifest = newest_model(home / "models" / MODEL_NAME)
    if manifest is None:
        raise SystemExit(f"no trained ranker under {home / 'models' / MODEL_NAME}")
    schema = preset_schema("simulator")
    start = time.perf_counter()
    fp32 = Ranker(open_store(store), schema, manifest, threads=2, follow=False, cascade_keep=0)
    int8 = Ranker(open_store(store), schema, manifest, precision="int8", threads=2, follow=False, cascade_keep=0)
    cascade = Ranker(open_store(store), schema, manifest, threads=2, follow=False)  # the default: keep DEFAULT_KEEP
    remembered = Ranker(open_store(store), schema, manifest, threads=2, follow=False)  # the same, users with history
    print(f"rank: {items:,} items, {CANDIDATES} candidates x {FEATURE_DIM} features, 2 threads; "
          f"rankers ready in {time.perf_counter() - start:.1f} s (item tower over every item, three times); {machine()}",
          flush=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    naive = ort.InferenceSession(str(manifest.path("naive")), options, providers=["CPUExecutionProvider"])
    blend = fp32.head_weights
    space = fp32.space
    rng = np.random.default_rng(0)
    user_ids = rng.integers(1, 50_001, requests + 5)
    # a user vector is a drifted mix of item vectors: each request's user is three items' vectors, normalised
    mixes = fp32.items.vectors[rng.integers(0, items, (requests + 5, 3))].sum(axis=1)
    users = (mixes / np.linalg.norm(mixes, axis=1, keepdims=True)).astype(np.float32)
    liked = rng.integers(1, items + 1, (len(user_ids), 5))  # each user's five latest likes, a minute apart
    remembered.history.add(np.repeat(user_ids, 5), liked.ravel(), np.full(liked.size, 3),
                           np.tile(np.arange(5) * 60 + int(time.time()) - 3600, len(user_ids)))

    timings: dict[str, list[float]] = {"retrieval": [], "naive": [], "decomposed": [], "int8": [], "cascade": [],
                                       "history": []}
    correlations = []
    for n, user_id in enumerate(user_ids.tolist()):
        user = users[n]
        t = time.perf_counter()
        found = fp32.retriever.retrieve(user, CANDIDATES + CANDIDATES // 10)
        retrieval = time.perf_counter() - t
        ids = found.ids[:CANDIDATES]
        sources = found.sources[:CANDIDATES]
        request = ranker_pb2.RankRequest(user_id=user_id, k=20, return_all_scores=True, include_seen=True)
        tensors = {"user_vector": user, "candidates": ids}

        t = time.perf_counter()  # naive: every feature of every candidate, then the full MLP
        attributes = fp32.user_attributes.get(user_id)
        rows = ids - 1
        items_ = fp32.items
        features = assemble(
            space.user_features(user[None, :], [attributes]), items_.features(rows), fp32._context(request),
            space.cross_features(user[None, :], space.user_crosses(attributes), items_.vectors[rows],
                                 items_.category[rows], sources, time.time() - items_.published[rows],
                                 items_.popularity[rows], trend=items_.trend[rows]))
        naive.run(["scores"], {"features": features, "head_weights": blend})
        naive_time = time.perf_counter() - t

        outputs = {}
        paths = (("decomposed", fp32), ("int8", int8), ("cascade", cascade), ("history", remembered))
        for name, ranker in paths if n % 2 == 0 else paths[::-1]:  # alternate the order: neither always runs warm
            out = HeapOutputs()
            t = time.perf_counter()
            ranker.rank(request, tensors, out)
            elapsed = time.perf_counter() - t
            outputs[name] = out.arrays["scores"]
            if n >= 5:
                timings[name].append(elapsed)
        if n >= 5:  # the first few warm caches and ONNX Runtime's arenas
            timings["retrieval"].append(retrieval)
            timings["naive"].append(naive_time)
            correlations.append(spearman(outputs["decomposed"], outputs["int8"]))
            assert len(ids) == CANDIDATES

    print(f"{'path':<12} {'P50 ms':>8} {'P99 ms':>8}")
    for name, samples in timings.items():
        print(f"{name:<12} {p50_ms(samples):8.2f} {p99_ms(samples):8.2f}")
    speedup = p50_ms(timings["naive"]) / p50_ms(timings["decomposed"])
    print(f"speedup naive/decomposed (P50): {speedup:.1f}x; naive/int8: {p50_ms(timings['naive']) / p50_ms(timings['int8']):.1f}x")
    history_cost = p50_ms(timings["history"]) / p50_ms(timings["cascade"])
    print(f"a user with history / without (the cascade, P50): {history_cost:.3f}x")
    print(f"int8 vs fp32 Spearman over {len(correlations)} requests: min {min(correlations):.4f}, "
          f"median {np.median(correlations):.4f}")
    result = {
        "candidates": CANDIDATES, "features": FEATURE_DIM,
        "retrieval_p50_ms": p50_ms(timings["retrieval"]), "naive_p50_ms": p50_ms(timings["naive"]),
        "decomposed_p50_ms": p50_ms(timings["decomposed"]), "int8_p50_ms": p50_ms(timings["int8"]),
        "cascade_p50_ms": p50_ms(timings["cascade"]), "history_p50_ms": p50_ms(timings["history"]),
        "history_cost": history_cost,
        "speedup": speedup, "int8_spearman": min(correlations),  # the worst request, not a typical one
    }
    record("rank", {**result, "items": items, "requests": requests, "heads": list(HEADS),
                    "p99_ms": {k: p99_ms(v) for k, v in timings.items()}, "int8_spearman_min": min(correlations)})
    print(result_line(result))


if __name__ == "__main__":
    main()
