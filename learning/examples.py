"""The ranker's training examples: validation events as serving would have met them (the user's vector at that
moment, their recent items), each with negatives drawn from the candidates serving would retrieve, and their
features built a batch at a time."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, TextIO

import numpy as np
import scipy.sparse as sp

from catalog.drift import replay_drift
from learning.metrics import best_columns
from learning.vectors import LearnedVectors, unit
from mesh.progress import Progress, working
from ranker.features import CONTEXT_DIM, HEADS, ITEM_DIM, USER_DIM, RecentItems
from ranker.history import POSITIVE_EVENTS, snapshots
from ranker.items import trend_before
from ranker.transitions import Transitions

if TYPE_CHECKING:
    from learning.training import Catalog

__all__ = ["CANDIDATES", "COLD_SHARE", "NEGATIVES", "PART_STARTS", "POSITIVES", "Examples", "labels_of", "pool_ranks",
           "ranker_examples", "stable_ranks"]

# Event types (EventType values of feedserve.v1) that count as each objective's positive.
POSITIVES = {"click": POSITIVE_EVENTS, "like": (3, 4), "dwell": (5,), "share": (4,)}
# negatives per validation event, drawn from what retrieval would give that user (as the ranker sees them); chosen
# on the validation slice of ml-100k's training period: 4, 8 and 16 gave 1.060, 1.075 and 1.111 x the best baseline
NEGATIVES = 16
CANDIDATES = 2_400  # what serving retrieves; negatives and source bits at training time mimic it
COLD_SHARE = 0.125  # validation events seen again as a new user's: what the ranker learns cold start from
# where the user, item, context and cross parts (Examples.parts) start among the 4,736 columns
PART_STARTS = (0, USER_DIM, USER_DIM + ITEM_DIM, USER_DIM + ITEM_DIM + CONTEXT_DIM)
MAX_EXAMPLE_EVENTS = 25_000  # validation events the ranker learns from at most (sampled): bounds training time


class Examples:
    """Feature rows and labels for the validation slice's events and their negatives, built batch by batch with
    the serving code, in the space the vectors were learned in (`interest`: where retrieval would have ranked each
    row's item for its user; `user_vectors`: the user's vector at that moment; `recent` and `activity`: the user's
    latest positive items and event count from the events strictly before that moment, as serving's History;
    `trend`: the row's item's trend from the same events, as serving's ItemTable; `transitions`: learned from the
    events the vectors were learned from)."""

    def __init__(self, catalog: Catalog, users: np.ndarray, rows: np.ndarray, stamps: np.ndarray, labels: np.ndarray,
                 interest: np.ndarray, user_vectors: np.ndarray, learned: LearnedVectors, popularity: np.ndarray,
                 recent: np.ndarray, activity: np.ndarray, trend: np.ndarray, transitions: Transitions) -> None:
        self.catalog, self.space, self.learned = catalog, catalog.items.space, learned
        self.users, self.rows, self.stamps, self.labels, self.interest = users, rows, stamps, labels, interest
        self.user_vectors, self.popularity = user_vectors, popularity
        self.recent, self.activity, self.trend, self.transitions = recent, activity, trend, transitions
        size = catalog.items.size
        self.popular_rank = np.empty(size, np.int64)
        self.popular_rank[np.argsort(-popularity, kind="stable")] = np.arange(size)
        self.fresh_rank = np.empty(size, np.int64)
        self.fresh_rank[np.argsort(-catalog.items.published[:size], kind="stable")] = np.arange(size)

    def __len__(self) -> int:
        return len(self.rows)

    def features(self, index: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """The feature rows of examples `index` (all 4,736 columns, or the sorted `columns` alone)."""
        parts = self.parts(index)
        if columns is None:
            return np.concatenate(parts, axis=1)
        # each part's own columns taken before joining: no 4,736-wide row is built for the few columns in use
        return np.concatenate([part[:, columns[(columns >= start) & (columns < start + part.shape[1])] - start]
                               for part, start in zip(parts, PART_STARTS)], axis=1)

    def parts(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The user, item, context and cross parts of the feature rows of examples `index`, in column order."""
        items, space = self.catalog.items, self.space
        rows, stamps, users = self.rows[index], self.stamps[index], self.user_vectors[index]
        attributes = [self.catalog.users.get(int(u)) for u in self.users[index]]
        user = space.user_features(users, attributes)
        vectors = self.learned.items[rows]
        age = stamps - items.published[rows]
        # the sources serving's retrieval would have given (about half by interest, an eighth each fresh and popular)
        sources = ((self.interest[index] < CANDIDATES * 0.55) * 1 + (self.fresh_rank[rows] < CANDIDATES // 8) * 4
                   + (self.popular_rank[rows] < CANDIDATES // 8) * 8).astype(np.uint8)
        recent = self.recent[index]
        transition = self.transitions.scores(recent, rows)
        valid = recent >= 0
        recent = np.where(valid, recent, 0)
        history = RecentItems(self.learned.items[recent], items.content[recent], self.activity[index], valid)
        cross = space.cross_features(users, [], vectors, items.category[rows], sources, age, self.popularity[rows],
                                     self.interest[index], items.content[rows], history, self.trend[index], transition,
                                     [space.user_crosses(a) for a in attributes])
        hour, weekday = (stamps // 3600) % 24, (stamps // 86400 + 3) % 7  # 1970-01-01 was a Thursday
        context = space.context_features(hour, weekday, [{}] * len(index))
        item = space.item_features(vectors, items.content[rows], items.columns[rows], items.numeric[rows])
        return user, item, context, cross


def labels_of(events: np.ndarray) -> np.ndarray:
    labels = np.zeros((len(events), len(HEADS)), np.float32)
    for k, head in enumerate(HEADS):
        labels[:, k] = np.isin(events, POSITIVES[head])
    return labels


def stable_ranks(scores: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Where `columns` would stand in a stable descending sort of `scores` (0 = first), without sorting: the count of
    higher scores, plus equal ones at a lower index."""
    at = scores[columns]
    higher = (scores[None, :] > at[:, None]).sum(axis=1)
    tied = (scores[None, :] == at[:, None]) & (np.arange(len(scores))[None, :] < columns[:, None])
    return higher + tied.sum(axis=1)


def pool_ranks(scores: np.ndarray, pool: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Where each of `columns` stands among its row's `pool` (the candidates by interest: a set of the row's best
    scores, nothing outside it scoring above its lowest) when they are ordered as a stable descending sort of
    `scores` orders them: an item inside counts the pool's items before it; an item outside counts the whole pool,
    as serving ranks a candidate from another source among the candidates. When the pool is the whole row, this is
    stable_ranks."""
    at = np.take_along_axis(scores, columns, axis=1)
    pooled = np.take_along_axis(scores, pool, axis=1)
    return (pooled[:, None, :] > at[:, :, None]).sum(axis=2) + \
        ((pooled[:, None, :] == at[:, :, None]) & (pool[:, None, :] < columns[:, :, None])).sum(axis=2)


def draw_negatives(scores: np.ndarray, positives: np.ndarray, pool_size: int, extras: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each positive, NEGATIVES items drawn uniformly from its candidates: the best `pool_size` of its row of
    `scores` (its event's interest scores, -inf where serving would not retrieve; one row may serve every positive,
    as for new users) and the `extras` (the popular and fresh sources' items) it may be shown; and the ranks of the
    positive and those negatives among the interest candidates (pool_ranks)."""
    size = scores.shape[1]
    # only the best pool_size (as a set) and the ranks of a few items per event are needed: a partial selection
    # and counts within it, not a sort of the whole catalog per event (a first run spent 8 minutes there)
    best = best_columns(scores, pool_size) if pool_size < size else np.broadcast_to(np.arange(size), scores.shape)
    if len(scores) != len(positives):
        scores = np.broadcast_to(scores, (len(positives), size))
        best = np.broadcast_to(best, (len(positives), best.shape[1]))
    negatives = np.zeros((len(positives), NEGATIVES), np.int64)
    for n in range(len(positives)):
        # (an item in both counts twice: a sort per event to merge them cost more than the slight tilt)
        pool = best[n] if pool_size >= size else np.concatenate([best[n], extras[np.isfinite(scores[n, extras])]])
        pool = pool[pool != positives[n]]
        negatives[n] = rng.choice(pool, NEGATIVES) if len(pool) else positives[n]
    return negatives, pool_ranks(scores, best, np.c_[positives, negatives])


def ranker_examples(catalog: Catalog, space: LearnedVectors, validation: np.ndarray, fit: sp.csr_matrix,
                     transitions: Transitions, rng: np.random.Generator, stream: TextIO | None = None) -> Examples:
    """The validation events (positives, and the dislikes and skips that are negatives), in time order, each with
    the user's vector as serving would hold it at that moment (learned, then moved by drift over the events before;
    the cold-start vector for a user with none yet), and negatives drawn uniformly from what retrieval would give
    that vector (by interest, and the popular and fresh sources): the distribution the ranker meets when serving.
    (Negatives drawn from the very top would teach it that a high score is bad.) A share of the events (COLD_SHARE)
    is seen a second time as a new user would be: the cold-start vector, no history, nothing seen, so that the
    ranker learns what to show someone it knows nothing about (without them, the cold-start feed was below recent
    popularity on ml-1m)."""
    events, size = catalog.events, catalog.items.size
    stream = stream if stream is not None else io.StringIO()
    if len(validation) > MAX_EXAMPLE_EVENTS:  # a sample, kept in time order (drift replays it in that order)
        validation = np.sort(rng.choice(validation, MAX_EXAMPLE_EVENTS, replace=False))
    who, rows = events["user"][validation], events["item"][validation] - 1
    with working(f"replaying drift and history over {len(who):,} validation events", stream):
        start = {int(u): space.users[u] for u in np.unique(who).tolist() if space.users_known[u]}
        _, moment = replay_drift(who, rows + 1, events["event"][validation], space.items[:size],
                                 before=np.arange(len(validation)), start=start)
        assert moment is not None
        moment[np.abs(moment).sum(axis=1) == 0] = space.cold_start
        moment = unit(moment)
        kinds, stamps = events["event"][validation], events["timestamp"][validation]
        recent, activity = snapshots(events["user"], events["item"], events["event"], events["timestamp"], validation)
    servable = catalog.items.servable[:size]
    pool_size = min(CANDIDATES, int(servable.sum()))
    # serving's other candidates: the popular and fresh sources (an eighth of the candidates each), beside interest;
    # without them as negatives, the ranker never saw a popular item of another taste lose, and put them first
    popularity = np.asarray(fit.astype(bool).sum(axis=0)).ravel().astype(np.float32)[:size]
    shown = np.flatnonzero(servable)
    extras = np.union1d(shown[np.argsort(-popularity[shown], kind="stable")[:CANDIDATES // 8]],
                        shown[np.argsort(-catalog.items.published[:size][shown], kind="stable")[:CANDIDATES // 8]])
    negatives = np.zeros((len(who), NEGATIVES), np.int64)
    ranks = np.zeros((len(who), 1 + NEGATIVES), np.int64)
    progress = Progress(f"drawing the ranker's negatives for {len(who):,} events", -(-len(who) // 512), stream=stream)
    block = np.empty((512, size), np.float32)  # one buffer: a fresh 400 MB array per block cost its page faults
    for a in range(0, len(who), 512):
        part = slice(a, a + 512)
        scores = block[:len(who[part])]
        np.matmul(moment[part], space.items[:size].T, out=scores)
        scores[:, ~servable] = -np.inf
        for n, user in enumerate(who[part].tolist()):
            scores[n, fit.indices[fit.indptr[user]:fit.indptr[user + 1]]] = -np.inf
        negatives[part], ranks[part] = draw_negatives(scores, rows[part], pool_size, extras, rng)
        progress.advance()
    # the new users' copies: one retrieval for all of them (same vector, nothing seen); half keep the user's
    # attributes (a new user may bring some), half have none (user 0: no user has that id)
    with working(f"new users' copies of {int(len(who) * COLD_SHARE):,} events; the items' trend", stream):
        cold = np.sort(rng.choice(len(who), int(len(who) * COLD_SHARE), replace=False))
        cold_scores = unit(space.cold_start[None, :]) @ space.items[:size].T
        cold_scores[:, ~servable] = -np.inf
        cold_negatives = np.zeros((len(cold), NEGATIVES), np.int64)
        cold_ranks = np.zeros((len(cold), 1 + NEGATIVES), np.int64)
        for a in range(0, len(cold), 512):
            part = slice(a, a + 512)
            chunk = rows[cold[part]]
            cold_negatives[part], cold_ranks[part] = draw_negatives(cold_scores, chunk, pool_size, extras, rng)
        anonymous = np.where(rng.random(len(cold)) < 0.5, 0, who[cold])
        who = np.r_[who, anonymous]
        rows, kinds, stamps = (np.r_[x, x[cold]] for x in (rows, kinds, stamps))
        moment = np.concatenate([moment, np.broadcast_to(unit(space.cold_start[None, :]), (len(cold), moment.shape[1]))])
        recent = np.concatenate([recent, np.full((len(cold), recent.shape[1]), -1, np.int64)])
        activity = np.r_[activity, np.zeros(len(cold), np.int64)]
        negatives, ranks = np.concatenate([negatives, cold_negatives]), np.concatenate([ranks, cold_ranks])
        # trend as serving's ItemTable held it just before the event's second
        cutoffs = np.searchsorted(events["timestamp"], stamps, side="left")
        example_rows = np.concatenate([rows, negatives.ravel()])
        repeat = np.repeat(np.arange(len(who)), NEGATIVES)
        trend = trend_before(events["item"] - 1, example_rows, np.r_[cutoffs, cutoffs[repeat]])
        labels = np.concatenate([labels_of(kinds), np.zeros((len(repeat), len(HEADS)), np.float32)])
    return Examples(catalog, np.concatenate([who, who[repeat]]), example_rows,
                     np.concatenate([stamps, stamps[repeat]]), labels, np.concatenate([ranks[:, 0], ranks[:, 1:].ravel()]),
                     np.concatenate([moment, moment[repeat]]), space, popularity,
                     np.concatenate([recent, recent[repeat]]), np.concatenate([activity, activity[repeat]]), trend,
                     transitions)
