"""What a rank request asks, checked: its fields and tensors validated (INVALID_ARGUMENT naming the field), and the
candidates kept by its filters (exclusions, seen items, labels, publication time)."""

from __future__ import annotations

import math

import numpy as np

from errors import InvalidArgument
from feedserve.v1 import ranker_pb2
from mesh.methods import Tensors
from mesh.tensors import check_finite, expect
from ranker.features import CONTEXT_DIM, HEADS
from ranker.items import ItemTable
from ranker.retrieval import Candidates

__all__ = ["MAX_CANDIDATES", "MAX_K", "keep_asked", "validate"]

MAX_CANDIDATES = 20_000
MAX_K = 500


def validate(request: ranker_pb2.RankRequest, tensors: Tensors, dim: int,
             items: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The request's user vector, given candidates and context features (each None when absent), once checked
    against the served width `dim` and the catalog's `items` ids."""
    if not 1 <= request.k <= MAX_K:
        raise InvalidArgument("k", f"expected 1..{MAX_K}, got {request.k}")
    if request.candidate_count > MAX_CANDIDATES:
        raise InvalidArgument("candidate_count", f"at most {MAX_CANDIDATES}, got {request.candidate_count}")
    user = expect(tensors, "user_vector", np.float32)
    if user is not None:
        if user.shape != (dim,):
            raise InvalidArgument("user_vector.shape", f"expected [{dim}], got {list(user.shape)}")
        check_finite(user, "user_vector")
    candidates = expect(tensors, "candidates", np.int64, ndim=1)
    if candidates is not None:
        if len(candidates) > MAX_CANDIDATES:
            raise InvalidArgument("candidates", f"at most {MAX_CANDIDATES}, got {len(candidates)}")
        if len(candidates) and (candidates.min() < 1 or candidates.max() > items):
            raise InvalidArgument("candidates", f"item ids are expected in 1..{items}")
    context = expect(tensors, "context_features", np.float32, ndim=1)
    if context is not None:
        if context.shape != (CONTEXT_DIM,):
            raise InvalidArgument("context_features.shape", f"expected [{CONTEXT_DIM}], got {list(context.shape)}")
        check_finite(context, "context_features")
    for head, weight in request.head_weights.items():
        if head not in HEADS:
            raise InvalidArgument(f"head_weights.{head}", f"unknown objective, expected one of {', '.join(HEADS)}")
        if not math.isfinite(weight):
            raise InvalidArgument(f"head_weights.{head}", f"expected a finite number, got {weight}")
    if request.published_after < 0:
        raise InvalidArgument("published_after", f"expected seconds since the epoch, got {request.published_after}")
    return user, candidates, context


def keep_asked(request: ranker_pb2.RankRequest, tensors: Tensors, found: Candidates, items: ItemTable,
               seen: dict[int, set[int]]) -> Candidates:
    """Drop excluded ids, items the user has seen, items outside the label filters, and items published too early."""
    rows = found.ids - 1
    keep = items.servable[rows].copy()  # a deleted or hidden item never appears, even when asked for by id
    exclude = expect(tensors, "exclude", np.int64, ndim=1)
    if exclude is not None and len(exclude):
        keep &= ~np.isin(found.ids, exclude)
    theirs = seen.get(request.user_id) if not request.include_seen else None
    if theirs:
        keep &= ~np.isin(found.ids, np.fromiter(theirs, np.int64, len(theirs)))
    if request.include_labels or request.exclude_labels:
        keep &= items.matches(rows, set(request.include_labels), set(request.exclude_labels))
    if request.published_after:
        keep &= items.published[rows] >= request.published_after
    if keep.all():
        return found
    return Candidates(ids=found.ids[keep], sources=found.sources[keep], scores=found.scores[keep])
