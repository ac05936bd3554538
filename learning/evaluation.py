"""Offline evaluation on a per-user split in time: the served pipeline (the real Ranker over the learned space)
against popularity, recent popularity, ALS, EASE and item-kNN, all fitted on the same training part (each tuned on
the same validation slice of it), all ranking the full catalog of items each user has not seen."""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import scipy.sparse as sp

from catalog import Schema, Store, open_store
from feedserve.v1 import ranker_pb2
from learning.baselines import EASE_GRID, KNN_GRID, fit_ease, fit_item_knn, tune_item_model
from learning.beside import Beside, caller_threads
from learning.metrics import ndcg_hr, recall, top_k
from learning.sequential import SequentialParams, check_epochs, sequences, tuned_top
from learning.training import POSITIVES, VALIDATION_SHARE, Trained, check_enough_events, export_trained, load_catalog, train
from learning.vectors import GRID, AlsParams, fit_als, interactions, per_user_holdout
from mesh.methods import HeapOutputs
from mesh.progress import Progress
from ranker.service import DEFAULT_KEEP, Ranker

__all__ = ["BASELINES", "RECENT_SHARE", "TEST_SHARE", "Evaluation", "SplitError", "best_baseline", "check_split",
           "evaluate_against_popularity", "evaluate_per_user"]

TEST_SHARE = 0.2  # each user's latest 20% of events, by time
RECENT_SHARE = 0.1  # recent popularity counts the last 10% of the training period
# --quick: EASE and item-kNN over two settings each, GRU4Rec for 10 epochs
QUICK_BASELINES = ((200.0, 800.0), (50, 400), SequentialParams(epochs=10))
MAX_TEST_USERS = 10_000  # users scored at most (a uniform sample beyond): each is a real Ranker call, twice


BASELINES = ("popularity", "recent_popularity", "als", "ease", "item_knn", "sequential")


def best_baseline(metrics: dict[str, float], k: int = 20) -> tuple[str, float]:
    """The baseline with the best NDCG@k in `metrics`, and that NDCG."""
    name = max((b for b in BASELINES if f"ndcg{k}_{b}" in metrics), key=lambda b: metrics[f"ndcg{k}_{b}"])
    return name, metrics[f"ndcg{k}_{name}"]


class SplitError(AssertionError):
    """A test event precedes a training event of the same user: the split would leak the future."""


@dataclass
class Evaluation:
    """The figures of one evaluation and the ALS setting tuned on the training part's validation slice. Until
    `complete`, the sequential baseline may still be training beside (`evaluate_per_user(wait=False)`): its figures
    and `ratio_vs_best` are not in `metrics` yet."""

    metrics: dict[str, float]
    params: AlsParams
    pending: _PendingSequential | None = None

    def complete(self) -> Evaluation:
        """Wait for the sequential baseline, if it is still training, and add its figures. Returns itself."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            with pending.beside:
                pending.add_to(self.metrics)
        return self

    def training(self) -> bool:
        """Whether the sequential baseline is still training beside (not yet done), without waiting."""
        return self.pending is not None and not self.pending.beside.done()

    def close(self) -> None:
        """Stop the sequential baseline's training if it was never collected (an error came first)."""
        if self.pending is not None:
            self.pending.beside.close()
            self.pending = None


def check_split(users: np.ndarray, timestamps: np.ndarray, held: np.ndarray) -> None:
    """Every user's test events come at or after their last training event (checked by the timestamps)."""
    train_last = np.full(users.max() + 1 if len(users) else 1, np.iinfo(np.int64).min)
    np.maximum.at(train_last, users[~held], timestamps[~held])
    early = held & (timestamps < train_last[users])
    if early.any():
        first = int(np.flatnonzero(early)[0])
        raise SplitError(f"user {int(users[first])}: a test event at {int(timestamps[first])} precedes their last "
                         f"training event at {int(train_last[users[first]])}")


def _hits(top: np.ndarray, relevant: sp.csr_matrix, rows: np.ndarray) -> dict[str, float]:
    ndcg, hr = ndcg_hr(top, relevant, rows)
    return {"ndcg": ndcg, "hr": hr}


def evaluate_per_user(store: Store, schema: Schema, dim: int, grid: list[AlsParams] = GRID, epochs: int = 4,
                      k: int = 20, stream: TextIO | None = None, seed: int = 0,
                      cascade_keep: int = DEFAULT_KEEP, validation: bool = False, quick: bool = False,
                      cascade_users: int | None = None, wait: bool = True) -> Evaluation:
    """Split each user's events in time (latest 20% held out), train the whole pipeline on a copy of the store
    holding only the training part, and score the held-out positives through the real Ranker and the baselines.
    With `validation`, the test part is dropped first and the same split is made of the training part: where
    choices are made (never on the test). With `quick`, the item-item baselines try fewer settings and the sequential
    one trains for fewer epochs (QUICK_BASELINES). With `cascade_users`, the cascade is checked against the full model
    on a uniform sample of that many test users (the full model on every candidate is the slowest pass). Without
    `wait`, it returns while the sequential baseline may still train beside: the caller works on, then calls
    `complete` (or `close`)."""
    stream = stream if stream is not None else io.StringIO()
    whole = load_catalog(store, schema, dim)
    events, size = whole.events, whole.items.size
    check_enough_events(len(events["user"]))  # before the sequential baseline's process starts
    held = per_user_holdout(events["user"], events["timestamp"], TEST_SHARE)
    check_split(events["user"], events["timestamp"], held)
    if validation:
        with tempfile.TemporaryDirectory(prefix="feedserve-validation-") as tmp:
            part = open_store(Path(tmp) / "training-part.db")
            try:
                store.copy_to(part, events=events["seq"][~held])
                return evaluate_per_user(part, schema, dim, grid, epochs, k, stream, seed, cascade_keep, quick=quick,
                                         cascade_users=cascade_users, wait=wait)
            finally:
                part.close()
    shape = (whole.user_rows, size)
    test = _test_part(events, held, shape, seed, MAX_TEST_USERS)
    slices = _validation_slice(events, held, shape)
    sequential = QUICK_BASELINES[2] if quick else SequentialParams()
    # the sequential baseline trains on one thread beside the rest, and the ranker's training and the Ranker leave
    # it a core: on 2 cores one thread trains the ranker at 0.6 of two's speed, where the baseline gains 3% from a
    # second
    beside = _start_sequential(events, slices, test, k, seed, sequential, stream)
    try:
        with _served_training_part(store, schema, dim, grid, epochs, seed, cascade_keep, events, held, stream,
                                   caller_threads()) as served:
            ranker, trained, now = served
            metrics = _score(ranker, trained, events, shape, k, seed, now, stream, test, slices, quick, cascade_users)
    except BaseException:
        beside.close()
        raise
    metrics.update({"train_events": float((~held).sum()), "test_events": float(held.sum())})
    evaluation = Evaluation(metrics, trained.vectors.params, _PendingSequential(beside, sequential, test, k, stream))
    return evaluation.complete() if wait else evaluation


def evaluate_against_popularity(store: Store, schema: Schema, dim: int, grid: list[AlsParams], epochs: int,
                                k: int = 20, stream: TextIO | None = None, seed: int = 0,
                                users: int = 2_000) -> dict[str, float]:
    """The served pipeline (trained with `grid` and `epochs`, as a first run trains) against popularity alone, on the
    same per-user split as evaluate_per_user and up to `users` of its test users. For catalogs too large for the
    item-item baselines (EASE is exact up to about 20,000 items): the default world's first-run model."""
    stream = stream if stream is not None else io.StringIO()
    whole = load_catalog(store, schema, dim)
    events, shape = whole.events, (whole.user_rows, whole.items.size)
    held = per_user_holdout(events["user"], events["timestamp"], TEST_SHARE)
    check_split(events["user"], events["timestamp"], held)
    with _served_training_part(store, schema, dim, grid, epochs, seed, DEFAULT_KEEP, events, held, stream) as served:
        ranker, trained, now = served
        seen, relevant, rows = _test_part(events, held, shape, seed, users)
        last = np.zeros(shape[0], np.int64)
        np.maximum.at(last, events["user"][~held], events["timestamp"][~held])
        top = _served(ranker, trained.vectors, rows, last, k, now, stream)
    popularity = np.bincount(events["item"][~held & np.isin(events["event"], POSITIVES["click"])] - 1,
                             minlength=shape[1]).astype(np.float32)
    metrics = {f"ndcg{k}": _hits(top, relevant, rows)["ndcg"],
               f"ndcg{k}_popularity": _hits(top_k(np.tile(popularity, (len(rows), 1)), seen, rows, k), relevant,
                                            rows)["ndcg"],
               "test_users": float(len(rows))}
    metrics["ratio_vs_popularity"] = metrics[f"ndcg{k}"] / max(metrics[f"ndcg{k}_popularity"], 1e-12)
    return metrics


@contextmanager
def _served_training_part(store: Store, schema: Schema, dim: int, grid: list[AlsParams], epochs: int, seed: int,
                          cascade_keep: int, events: dict[str, np.ndarray], held: np.ndarray, stream: TextIO,
                          threads: int = 0) -> Iterator[tuple[Ranker, Trained, list[float]]]:
    """The whole pipeline trained on a copy of the store holding only the training part (the test part never
    enters it), its space published, and the real Ranker over it; with the list holding the Ranker's clock. The
    ranker trains, and the Ranker runs its model, on `threads` threads (0: one per core)."""
    with tempfile.TemporaryDirectory(prefix="feedserve-evaluation-") as tmp:
        copy = open_store(Path(tmp) / "training-part.db")
        try:
            store.copy_to(copy, events=events["seq"][~held])
            catalog = load_catalog(copy, schema, dim)
            trained = train(catalog, grid, epochs, seed=seed, stream=stream, threads=threads)
            manifest = export_trained(trained, copy, schema, Path(tmp) / "models", catalog.sequence, stream=stream)
            copy.publish_space(int(manifest.extra["space"]))
            # the Ranker's clock stands at the end of the training part: freshness and the context's hour and
            # weekday are those of the moment the held-out events begin, not of today
            now = [0.0]  # set per user: where their held-out events begin
            ranker = Ranker(copy, schema, manifest, follow=False, threads=threads or os.cpu_count() or 1,
                            clock=lambda: now[0], cascade_keep=cascade_keep)
            try:
                yield ranker, trained, now
            finally:
                ranker.close()
        finally:
            copy.close()


def _test_part(events: dict[str, np.ndarray], held: np.ndarray, shape: tuple[int, int], seed: int, most: int
               ) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """What each user saw in training, their held-out positives not seen there, and the test users (those with
    any; a uniform sample of `most` beyond)."""
    users, items, kinds = events["user"], events["item"], events["event"]
    seen = sp.csr_matrix((np.ones((~held).sum(), np.float32), (users[~held], items[~held] - 1)), shape=shape)
    positive = held & np.isin(kinds, POSITIVES["click"])
    relevant = sp.csr_matrix((np.ones(positive.sum(), np.float32), (users[positive], items[positive] - 1)), shape=shape)
    relevant = relevant - relevant.multiply(seen.astype(bool))  # an item seen in training cannot be shown again
    relevant.eliminate_zeros()
    rows = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if len(rows) > most:
        rows = np.sort(np.random.default_rng(seed).choice(rows, most, replace=False))
    return seen, relevant, rows


def _served(ranker: Ranker, space, rows: np.ndarray, last: np.ndarray, k: int, now: list[float],
            stream: TextIO, as_new: int = 0, undiversified: np.ndarray | None = None) -> np.ndarray:
    """Each test user's top k through the real Ranker (item rows; -1 pads a short feed); with `as_new` (a user id
    no event names), each asked for as that new user: no vector, no history, nothing seen. With `undiversified`
    ([len(rows), k]), the same calls' final scores of every candidate, ranked by score alone (the ranker's own order
    with its category cap off), are written there: one pass gives both."""
    served = np.full((len(rows), k), -1, np.int64)
    label = "as new users" if as_new else "through the Ranker"
    progress = Progress(f"scoring {len(rows):,} users {label}", len(rows), stream=stream)
    for n, user in enumerate(rows.tolist()):
        tensors = {"user_vector": space.users[user]} if space.users_known[user] and not as_new else {}
        now[0] = float(last[user])
        outputs = HeapOutputs()
        reply = ranker.rank(ranker_pb2.RankRequest(user_id=as_new or user, k=k,
                                                   return_all_scores=undiversified is not None), tensors, outputs)
        got = np.array([i.item_id - 1 for i in reply.items], np.int64)
        served[n, :len(got)] = got
        if undiversified is not None and "scores" in outputs.arrays:
            order = np.argsort(-outputs.arrays["scores"], kind="stable")[:k]
            undiversified[n, :len(order)] = outputs.arrays["candidate_ids"][order] - 1
        progress.advance()
    return served


def _reporter(progress: Progress) -> Callable[[float, float], None]:
    """A tuning report as a progress bar's step: the setting and its validation NDCG@20."""
    return lambda value, ndcg: progress.advance(note=f"{value:g}: NDCG@20 {ndcg:.4f}")


@dataclass(frozen=True)
class _Slices:
    """The training part, and its own validation slice (each user's latest events of it) where the baselines are
    tuned: `inner` the training part's event indices, `tuning` which of them are the slice."""

    training: np.ndarray
    inner: np.ndarray
    tuning: np.ndarray
    fit_part: sp.csr_matrix
    check_part: sp.csr_matrix


def _validation_slice(events: dict[str, np.ndarray], held: np.ndarray, shape: tuple[int, int]) -> _Slices:
    users, items, kinds = events["user"], events["item"], events["event"]
    training = ~held
    tuning = per_user_holdout(users[training], events["timestamp"][training], VALIDATION_SHARE)
    inner = np.flatnonzero(training)
    fit, check = inner[~tuning], inner[tuning]
    return _Slices(training, inner, tuning, interactions(users[fit], items[fit], kinds[fit], shape),
                   interactions(users[check], items[check], kinds[check], shape))


def _start_sequential(events: dict[str, np.ndarray], slices: _Slices,
                      test: tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray], k: int, seed: int,
                      params: SequentialParams, stream: TextIO) -> Beside:
    """GRU4Rec, started in a child process: its epochs tuned on the training part's validation slice, then trained
    on the whole training part, ranking the test users (`_PendingSequential` collects it)."""
    users, items, stamps = events["user"], events["item"], events["timestamp"]
    positive = np.isin(events["event"], POSITIVES["click"])
    before, training = slices.inner[~slices.tuning], slices.training
    early = sequences(users[before], items[before], stamps[before], positive[before])
    everything = sequences(users[training], items[training], stamps[training], positive[training])
    seen, _, rows = test
    print("training the sequential baseline (GRU4Rec) in a second process, beside the rest", file=stream)
    return Beside("the sequential baseline (GRU4Rec)", tuned_top, early, everything, slices.fit_part,
                  slices.check_part, rows, seen, k, params, seed)


@dataclass
class _PendingSequential:
    """The sequential baseline training beside, and what scoring it needs."""

    beside: Beside
    params: SequentialParams
    test: tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]
    k: int
    stream: TextIO

    def add_to(self, metrics: dict[str, float]) -> None:
        """Wait for its top k, drawing its training's progress from the child's notes (at once, for the part done
        while the rest ran), and add its figures and the served feed's ratio to the best baseline."""
        k, stream = self.k, self.stream
        tuning = Progress("training the sequential baseline (GRU4Rec) on the validation slice",
                          len(check_epochs(self.params)), stream=stream)
        bar: list[Progress] = []

        def on_note(note: tuple) -> None:
            if note[0] == "checked":
                tuning.advance(note=f"epoch {note[1]}: NDCG@20 {note[2]:.4f}")
            elif note[0] == "final":
                bar.append(Progress(f"training the sequential baseline (GRU4Rec) on the whole training part, "
                                    f"{note[1]} epochs", note[1], stream=stream))
            elif bar:
                bar[0].advance(note=f"epoch {note[1]}")

        waiting = time.monotonic()
        top, epochs = self.beside.result(on_note)
        print(f"sequential: {epochs} epochs (waited {time.monotonic() - waiting:.0f} s for it here)", file=stream)
        _, relevant, rows = self.test
        hits = _hits(top, relevant, rows)
        metrics[f"ndcg{k}_sequential"], metrics[f"hr{k}_sequential"] = hits["ndcg"], hits["hr"]
        _, best_ndcg = best_baseline(metrics, k)
        metrics["ratio_vs_best"] = metrics[f"ndcg{k}"] / best_ndcg


def _score(ranker: Ranker, trained: Trained, events: dict[str, np.ndarray], shape: tuple[int, int],
           k: int, seed: int, now: list[float], stream: TextIO, test: tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray],
           slices: _Slices, quick: bool = False,
           cascade_users: int | None = None) -> dict[str, float]:
    users, items, kinds = events["user"], events["item"], events["event"]
    seen, relevant, rows = test
    space = trained.vectors

    last = np.zeros(shape[0], np.int64)
    training = slices.training
    np.maximum.at(last, users[training], events["timestamp"][training])
    undiversified = np.full((len(rows), k), -1, np.int64)  # the same rankings by score alone: what the cap costs
    served = _served(ranker, space, rows, last, k, now, stream, undiversified=undiversified)
    primary = ranker.resident.primary
    checked = np.ones(len(rows), bool)  # the users the cascade is checked on: all, or a uniform sample
    if cascade_users is not None and len(rows) > cascade_users:
        checked[:] = False
        checked[np.random.default_rng(seed + 1).choice(len(rows), cascade_users, replace=False)] = True
    light, primary.light = primary.light, None  # the full model on every candidate: what the cascade costs
    full_model = _served(ranker, space, rows[checked], last, k, now, stream) if light is not None else served[checked]
    primary.light = light
    cold = _served(ranker, space, rows, last, k, now, stream, as_new=shape[0] + 1)

    vectors = np.where(space.users_known[rows, None], space.users[rows], space.cold_start[None, :])
    servable = ranker.items.servable[:shape[1]]
    retrieval_scores = vectors @ ranker.items.vectors[:shape[1]].T
    retrieval_scores[:, ~servable] = -np.inf
    retrieval = top_k(retrieval_scores, seen, rows, 100)

    train_positive = training & np.isin(kinds, POSITIVES["click"])
    popularity = np.bincount(items[train_positive] - 1, minlength=shape[1]).astype(np.float32)
    stamps = events["timestamp"][training]
    cut = np.quantile(stamps, 1 - RECENT_SHARE) if len(stamps) else 0
    recent = np.bincount(items[train_positive & (events["timestamp"] >= cut)] - 1, minlength=shape[1]).astype(np.float32)
    matrix = interactions(users[training], items[training], kinds[training], shape)
    als_users, als_items = fit_als(matrix, space.params, seed)

    def ranked(scores: np.ndarray) -> np.ndarray:
        return top_k(scores, seen, rows, k)

    # the item-item baselines, each tuned on the training part's own latest events (never on the test part)
    tuned: dict[str, np.ndarray] = {}
    ease_grid, knn_grid = QUICK_BASELINES[:2] if quick else (EASE_GRID, KNN_GRID)
    for name, fit, grid in (("ease", fit_ease, ease_grid),
                            ("item_knn", lambda m, v: fit_item_knn(m, int(v)), knn_grid)):
        progress = Progress(f"tuning {name} on the validation slice ({len(grid)} settings)", len(grid), stream=stream)
        value, _ = tune_item_model(fit, grid, slices.fit_part, slices.check_part, report=_reporter(progress))
        print(f"{name}: {value:g}", file=stream)
        tuned[name] = ranked(fit(matrix, value).scores(matrix[rows]))

    results = {"served": _hits(served, relevant, rows), "undiversified": _hits(undiversified, relevant, rows),
               "full_model": _hits(full_model, relevant, rows[checked]),
               "popularity": _hits(ranked(np.tile(popularity, (len(rows), 1))), relevant, rows),
               "recent_popularity": _hits(ranked(np.tile(recent, (len(rows), 1))), relevant, rows),
               "als": _hits(ranked(als_users[rows] @ als_items.T), relevant, rows),
               **{name: _hits(top, relevant, rows) for name, top in tuned.items()}}
    metrics = {f"ndcg{k}": results["served"]["ndcg"], f"hr{k}": results["served"]["hr"]}
    for name in ("undiversified", "full_model", *(b for b in BASELINES if b != "sequential")):  # that one comes later
        metrics[f"ndcg{k}_{name}"] = results[name]["ndcg"]
        metrics[f"hr{k}_{name}"] = results[name]["hr"]
    # new users: the cold feed against recent popularity, both over the whole catalog (a new user has seen nothing)
    nothing = sp.csr_matrix(shape, dtype=np.float32)
    metrics[f"ndcg{k}_cold_start"] = _hits(cold, relevant, rows)["ndcg"]
    metrics[f"ndcg{k}_cold_recent_popularity"] = _hits(top_k(np.tile(recent, (len(rows), 1)), nothing, rows, k),
                                                       relevant, rows)["ndcg"]
    metrics[f"ndcg{k}_cold_popularity"] = _hits(top_k(np.tile(popularity, (len(rows), 1)), nothing, rows, k),
                                                relevant, rows)["ndcg"]
    metrics["cold_start_ratio"] = metrics[f"ndcg{k}_cold_start"] / metrics[f"ndcg{k}_cold_recent_popularity"]
    metrics["recall100_retrieval"] = recall(retrieval, relevant, rows)
    alone = _hits(retrieval[:, :k], relevant, rows)  # the learned vectors alone, no ranker
    metrics[f"ndcg{k}_retrieval"], metrics[f"hr{k}_retrieval"] = alone["ndcg"], alone["hr"]
    shown = np.unique(served[served >= 0])
    metrics["coverage"] = float(len(shown) / max(int(servable.sum()), 1))
    metrics["test_users"] = float(len(rows))
    metrics["cascade_keep"] = float(ranker.cascade_keep if light is not None else 0)
    metrics["ranker_gain"] = metrics[f"ndcg{k}"] / metrics[f"ndcg{k}_retrieval"]
    # on the same users: the cascade's feeds (as served) against the full model's
    metrics["quality_ratio_cascade"] = _hits(served[checked], relevant, rows[checked])["ndcg"] / metrics[f"ndcg{k}_full_model"]
    metrics["cascade_check_users"] = float(checked.sum())
    return metrics
