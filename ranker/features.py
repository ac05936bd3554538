"""The ranker's 4,736-dimensional feature vector: user, item, context and cross parts, and how each is built.

    [ user 2,048 | item 2,048 | context 512 | cross 128 ]

The first dense layer of the model splits exactly along these parts, which is what lets the ranker
compute the user and context parts once per request and the item part once per item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from world import World
from world.synthetic import CATEGORIES, DEVICES, SURFACES

__all__ = [
    "USER_DIM", "ITEM_DIM", "CONTEXT_DIM", "CROSS_DIM", "FEATURE_DIM", "HIDDEN_ITEM", "HEADS", "SOURCES",
    "ItemTable", "user_features", "item_features", "context_features", "cross_features", "assemble",
]

USER_DIM, ITEM_DIM, CONTEXT_DIM, CROSS_DIM = 2048, 2048, 512, 128
FEATURE_DIM = USER_DIM + ITEM_DIM + CONTEXT_DIM + CROSS_DIM  # 4,736
HIDDEN_ITEM = 512  # width of the first hidden layer: the item tower's output
HEADS = ("click", "like", "dwell", "share")
SOURCES = ("interest", "cluster", "fresh", "popular")
EMBED = 64
N_CATEGORIES = len(CATEGORIES)
FRESHNESS_DAYS = 7.0

_USER_HASHED = (EMBED + N_CATEGORIES, USER_DIM)  # columns for hashed user attributes
_ITEM_HASHED = (EMBED + N_CATEGORIES + 1, ITEM_DIM)
_CONTEXT_HASHED = (24 + 7 + len(DEVICES) + len(SURFACES), CONTEXT_DIM)
_CROSS_HASHED = (EMBED + 10, CROSS_DIM)


def _hash_columns(codes: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Column of each (field, code) in the hashed block [start, end): one multiplicative hash per field."""
    start, end = span
    fields = np.arange(codes.shape[-1], dtype=np.uint64)
    mixed = (codes.astype(np.uint64) + np.uint64(1)) * np.uint64(2654435761) + fields * np.uint64(40503)
    return (start + mixed % np.uint64(end - start)).astype(np.int64)


@dataclass
class ItemTable:
    """The per-item attributes the ranker keeps in memory (row = item id - 1), growable for new items."""

    embeddings: np.ndarray  # float32 [N, 64]
    category: np.ndarray  # int16 [N]
    published: np.ndarray  # int64 [N], seconds
    popularity: np.ndarray  # float32 [N]
    attributes: np.ndarray  # int32 [N, 4]

    @classmethod
    def from_world(cls, world: World) -> ItemTable:
        return cls(
            np.ascontiguousarray(world.item_embeddings, dtype=np.float32),
            np.asarray(world.item_category).astype(np.int16),
            np.asarray(world.item_published).astype(np.int64),
            np.asarray(world.item_popularity).astype(np.float32),
            np.asarray(world.item_attributes).astype(np.int32),
        )

    def __len__(self) -> int:
        return len(self.embeddings)

    def append(self, embeddings: np.ndarray, category: np.ndarray, published: np.ndarray,
               popularity: np.ndarray, attributes: np.ndarray) -> None:
        self.embeddings = np.concatenate([self.embeddings, embeddings.astype(np.float32)])
        self.category = np.concatenate([self.category, category.astype(np.int16)])
        self.published = np.concatenate([self.published, published.astype(np.int64)])
        self.popularity = np.concatenate([self.popularity, popularity.astype(np.float32)])
        self.attributes = np.concatenate([self.attributes, attributes.astype(np.int32)])


def user_features(users: np.ndarray | None, attributes: np.ndarray | None, centroids: np.ndarray,
                  rows: int = 1) -> np.ndarray:
    """[b, 2048]: user vectors [b, 64], their affinity to every category, hashed profile attributes [b, 4].
    None (an unknown user) leaves that part zero."""
    b = rows if users is None else len(users)
    out = np.zeros((b, USER_DIM), dtype=np.float32)
    if users is not None:
        out[:, :EMBED] = users
        out[:, EMBED:EMBED + N_CATEGORIES] = users @ centroids.T
    if attributes is not None:
        np.put_along_axis(out, _hash_columns(attributes, _USER_HASHED), 1.0, axis=1)
    return out


def item_features(items: ItemTable, rows: np.ndarray) -> np.ndarray:
    """[n, 2048]: embedding, category one-hot, log popularity, hashed attributes. Static: no clock inside."""
    out = np.zeros((len(rows), ITEM_DIM), dtype=np.float32)
    out[:, :EMBED] = items.embeddings[rows]
    out[np.arange(len(rows)), EMBED + items.category[rows]] = 1.0
    out[:, EMBED + N_CATEGORIES] = np.log1p(items.popularity[rows]) / 10
    np.put_along_axis(out, _hash_columns(items.attributes[rows], _ITEM_HASHED), 1.0, axis=1)
    return out


def context_features(hour: np.ndarray, weekday: np.ndarray, device: np.ndarray, surface: np.ndarray,
                     feature_tag: str = "") -> np.ndarray:
    """[b, 512]: hour, weekday, device and surface one-hots, and the hashed feature tag."""
    b = len(hour)
    out = np.zeros((b, CONTEXT_DIM), dtype=np.float32)
    at = np.arange(b)
    out[at, np.asarray(hour) % 24] = 1.0
    out[at, 24 + np.asarray(weekday) % 7] = 1.0
    out[at, 31 + np.asarray(device) % len(DEVICES)] = 1.0
    out[at, 31 + len(DEVICES) + np.asarray(surface) % len(SURFACES)] = 1.0
    tag = sum(feature_tag.encode())
    out[:, _hash_columns(np.array([[tag]]), _CONTEXT_HASHED)[0, 0]] = 1.0
    return out


def cross_features(users: np.ndarray | None, user_attributes: np.ndarray | None, items: ItemTable, rows: np.ndarray,
                   sources: np.ndarray, source_scores: np.ndarray, now: int, centroids: np.ndarray) -> np.ndarray:
    """[n, 128]: user*item, their inner product, source bits and scores, freshness, category affinity,
    popularity, and hashed (country, category) pairs. `users` is [1, 64] (one request) or [n, 64]."""
    n = len(rows)
    out = np.zeros((n, CROSS_DIM), dtype=np.float32)
    embeddings = items.embeddings[rows]
    category = items.category[rows].astype(np.int64)
    if users is not None:
        out[:, :EMBED] = embeddings * users
        out[:, EMBED] = np.einsum("nd,nd->n", embeddings, np.broadcast_to(users, embeddings.shape))
        affinity = users @ centroids.T  # [1 or n, categories]
        out[:, EMBED + 8] = np.take_along_axis(np.broadcast_to(affinity, (n, affinity.shape[1])), category[:, None], 1)[:, 0]
    out[:, EMBED + 1:EMBED + 5] = (sources[:, None].astype(np.int64) >> np.arange(4)) & 1
    out[:, EMBED + 5:EMBED + 7] = source_scores
    age_days = np.clip((now - items.published[rows]) / 86400, 0, None)
    out[:, EMBED + 7] = np.exp(-age_days / FRESHNESS_DAYS)
    out[:, EMBED + 9] = np.log1p(items.popularity[rows]) / 10
    if user_attributes is not None:  # (country, category) pairs: who likes what where
        country = np.broadcast_to(user_attributes[:, 0], (n,)) if len(user_attributes) == 1 else user_attributes[:, 0]
        pairs = country.astype(np.int64) * N_CATEGORIES + category
        out[np.arange(n), _hash_columns(pairs[:, None], _CROSS_HASHED)[:, 0]] = 1.0
    return out


def assemble(user: np.ndarray, items: np.ndarray, context: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """The naive full matrix [n, 4736]: the user and context parts repeated on every row."""
    n = len(items)
    out = np.empty((n, FEATURE_DIM), dtype=np.float32)
    out[:, :USER_DIM] = user
    out[:, USER_DIM:USER_DIM + ITEM_DIM] = items
    out[:, USER_DIM + ITEM_DIM:USER_DIM + ITEM_DIM + CONTEXT_DIM] = context
    out[:, USER_DIM + ITEM_DIM + CONTEXT_DIM:] = cross
    return out
