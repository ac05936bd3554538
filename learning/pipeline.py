"""What `feedserve train` runs: evaluate on a per-user split, refuse a model that does not beat popularity, then
learn on everything and export the next version (its space staged in the store, its graphs on disk)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TextIO

from catalog import Schema, Store
from engines import ModelManifest
from learning.beside import caller_threads
from learning.evaluation import best_baseline, evaluate_per_user
from learning.training import TrainingError, export_trained, load_catalog, train
from learning.vectors import GRID, AlsParams
from mesh.progress import working

__all__ = ["CASCADE_CHECK_USERS", "fit_and_export", "quality_table"]

CASCADE_CHECK_USERS = 2_000  # test users the cascade is checked on against the full model (the bench: all of them)


def quality_table(metrics: dict[str, float], k: int = 20) -> str:
    """The per-user split's figures, served pipeline beside the baselines, as a small table."""
    if f"ndcg{k}" not in metrics:
        return "(no per-user evaluation was run)"
    lines = [f"{'per-user split':<22} {'NDCG@' + str(k):>9} {'HR@' + str(k):>8}"]
    sampled = metrics.get("cascade_check_users", metrics.get("test_users", 0)) < metrics.get("test_users", 0)
    for label, suffix in (("served", ""), ("served, no diversity", "_undiversified"),
                          ("full model, sampled*" if sampled else "full model, no cascade", "_full_model"),
                          ("popularity", "_popularity"),
                          ("recent popularity", "_recent_popularity"),
                          ("ALS", "_als"), ("EASE", "_ease"), ("item-kNN", "_item_knn"),
                          ("sequential (GRU4Rec)", "_sequential"), ("retrieval alone", "_retrieval")):
        hr = metrics.get(f"hr{k}{suffix}", float("nan"))
        lines.append(f"{label:<22} {metrics.get(f'ndcg{k}{suffix}', float('nan')):9.4f} {hr:8.4f}")
    lines.append(f"recall@100 of retrieval {metrics['recall100_retrieval']:.4f}, catalog coverage {metrics['coverage']:.3f}, "
                 f"{int(metrics['test_users']):,} test users")
    if "ratio_vs_best" in metrics:
        best, _ = best_baseline(metrics, k)
        lines.append(f"served / best baseline ({best}) {metrics['ratio_vs_best']:.3f}, served / its own retrieval "
                     f"{metrics['ranker_gain']:.3f}, cascade / full model {metrics['quality_ratio_cascade']:.3f}"
                     + (f" (*: the full model on every candidate, on a sample of {int(metrics['cascade_check_users']):,} test "
                        "users)" if sampled else ""))
        lines.append(f"new users (no vector, no history): NDCG@{k} {metrics[f'ndcg{k}_cold_start']:.4f} against recent "
                     f"popularity's {metrics[f'ndcg{k}_cold_recent_popularity']:.4f} (ratio {metrics['cold_start_ratio']:.3f})")
    return "\n".join(lines)


def fit_and_export(store: Store, schema: Schema, root: Path, dim: int, grid: list[AlsParams] = GRID, epochs: int = 4,
                   stream: TextIO | None = None, require_better: bool = True, evaluate: bool = True,
                   quick: bool = False) -> ModelManifest:
    """Evaluate (unless `evaluate` is off), then train on every event so far with the setting the evaluation tuned,
    and export. Refuses (TrainingError) a model whose served NDCG@20 does not beat popularity's, unless
    `require_better` is off."""
    report = evaluate_per_user(store, schema, dim, grid, epochs, stream=stream, quick=quick,
                               cascade_users=CASCADE_CHECK_USERS, wait=False) if evaluate else None
    try:  # the evaluation's sequential baseline may train on beside the training below
        metrics = report.metrics if report is not None else {}
        if report is not None and require_better and not metrics["ndcg20"] > metrics["ndcg20_popularity"]:
            raise TrainingError(f"NDCG@20 {metrics['ndcg20']:.4f} does not beat popularity's "
                                f"{metrics['ndcg20_popularity']:.4f} on the per-user split: not exported")
        with working("reading the catalog and its event log from the store", stream or io.StringIO()):
            catalog = load_catalog(store, schema, dim)
        # while the baseline still trains, the ranker leaves it a core (as the evaluation's does)
        threads = caller_threads() if report is not None and report.training() else 0
        trained = train(catalog, [report.params] if report is not None else grid, epochs, stream=stream,
                        threads=threads)
        if report is not None:
            trained.metrics.update(report.complete().metrics)
    finally:
        if report is not None:
            report.close()
    return export_trained(trained, store, schema, root, catalog.sequence, stream=stream)
