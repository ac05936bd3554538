"""The ranker's 4,736-dimensional feature vector, built from the catalog's declared schema: user, item, context, cross.

    [ user 2,048 | item 2,048 | context 512 | cross 128 ]

    user     the user's vector, numeric user fields, hashed categorical and multi-valued user fields
    item     the item's served (learned) vector, its content vector, numeric item fields, hashed categories, tags and
             categorical item fields
    context  hour and weekday one-hots, numeric context fields, hashed categorical context fields, the feature tag
    cross    user.item and its rank among the candidates, retrieval source bits, freshness, popularity, the
             candidate's similarity to the user's latest positive items (learned and content spaces) and the user's
             activity, the item's trend (popularity decayed over the latest events), how often the candidate followed
             the user's latest items in others' sequences (transitions), hashed (user field value x item category)
             pairs

The first dense layer of the model splits exactly along these parts, which is what lets the ranker compute the
user and context parts once per request and the item part once per item. Nothing here knows any one catalog: a
new catalog brings a schema file, and its fields land in hashed columns by name.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from catalog.records import OBJECTIVES
from catalog.schema import Schema
from errors import InvalidArgument

__all__ = [
    "USER_DIM", "ITEM_DIM", "CONTEXT_DIM", "CROSS_DIM", "FEATURE_DIM", "HIDDEN_ITEM", "HEADS", "SOURCES",
    "FeatureSpace", "ItemCodes", "RecentItems", "assemble",
]

USER_DIM, ITEM_DIM, CONTEXT_DIM, CROSS_DIM = 2048, 2048, 512, 128
FEATURE_DIM = USER_DIM + ITEM_DIM + CONTEXT_DIM + CROSS_DIM  # 4,736
HIDDEN_ITEM = 512  # width of the first hidden layer: the item tower's output
HEADS = OBJECTIVES
SOURCES = ("interest", "cluster", "fresh", "popular")
FRESHNESS_DAYS = 7.0
MAX_CODES = 24  # hashed columns kept per item (categories, tags, fields); more are dropped, rarest last
_CROSS_FIXED = 17  # dot, 4 source bits, freshness, popularity, the dot's rank, 5 history, 2 trend, 2 transition
_HISTORY = 8  # where the recent items' columns begin
_TREND = 13  # where the trend columns begin
_TRANSITION = 15  # where the transition columns begin
_ACTIVITY_SCALE = 8.0  # log1p(events) / 8: 1 event -> 0.09, 3,000 events -> 1.0
_RANK_SCALE = 8.0  # log1p(rank) / 8: rank 0 -> 0, rank 2,400 -> 0.97
_CONTEXT_FIXED = 31  # hour 24 + weekday 7


def _hash(text: str) -> int:
    """Stable across processes and machines (unlike Python's salted hash)."""
    return zlib.crc32(text.encode())


def _scaled(value: float) -> float:
    """Numbers of any magnitude into a range the MLP likes: a signed log."""
    return math.copysign(math.log1p(abs(value)), value) / 10.0


@dataclass
class ItemCodes:
    """What an item contributes besides its vector: hashed item-part columns (padded with -1), numeric field values,
    and the code of its first category (diversity and crosses)."""

    columns: np.ndarray  # int32 [MAX_CODES]
    numeric: np.ndarray  # float32 [numeric item fields]
    category: int


@dataclass
class RecentItems:
    """A user's latest positive items (newest first) as the cross part compares candidates with them: their served
    vectors (as wide as the candidates'), their content vectors, and how many events the user has in all. One
    request shares one history ([r, ...]); training gives each row its own ([n, r, ...], `valid` marking the real
    items among the padding, `events` per row).

    These are cross features, not user features: each compares one candidate with the user's history, so they
    change per candidate and cannot be folded into the once-per-request user term."""

    vectors: np.ndarray  # float32 [r, width] or [n, r, width]
    content: np.ndarray  # float32 [r, dim] or [n, r, dim], unit length
    events: int | np.ndarray
    valid: np.ndarray | None = None  # bool [n, r], with per-row histories


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class FeatureSpace:
    """Where each declared field lands, for a schema and a vector width."""

    def __init__(self, schema: Schema, dim: int) -> None:
        self.schema, self.dim = schema, dim
        self.numeric = {entity: [n for n, k in schema.of(entity).items() if k == "numeric"] for entity in ("user", "item", "context")}
        self.hashed = {entity: [n for n, k in schema.of(entity).items() if k in ("categorical", "multi")]
                       for entity in ("user", "item", "context")}
        # user: [vector | numeric fields | hashed block]; item: [vector | content vector | numeric fields | hashed block]
        self._dense = {"user": dim, "item": 2 * dim}
        for entity, width in (("user", USER_DIM), ("item", ITEM_DIM)):
            if self._dense[entity] + len(self.numeric[entity]) + 64 > width:
                raise ValueError(f"{dim}-wide vectors and {len(self.numeric[entity])} numeric {entity} fields leave "
                                 f"too few hashed columns in the {width}-wide {entity} part")
        self._user_hashed = (dim + len(self.numeric["user"]), USER_DIM)
        self._item_hashed = (2 * dim + len(self.numeric["item"]), ITEM_DIM)
        self._context_hashed = (_CONTEXT_FIXED + len(self.numeric["context"]), CONTEXT_DIM)
        self._cross_hashed = (_CROSS_FIXED, CROSS_DIM)

    @staticmethod
    def _column(span: tuple[int, int], field: str, value: str) -> int:
        start, end = span
        return start + _hash(f"{field}={value}") % (end - start)

    def _hashed_columns(self, entity: str, attributes: Mapping[str, Any], span: tuple[int, int]) -> list[int]:
        columns = []
        for name in self.hashed[entity]:
            value = attributes.get(name)
            for v in ([] if value is None else value if isinstance(value, list) else [value]):
                columns.append(self._column(span, name, str(v)))
        return columns

    # -- items: coded once, when they change ------------------------------------------------------------

    def item_codes(self, categories: Sequence[str], tags: Sequence[str], attributes: Mapping[str, Any]) -> ItemCodes:
        columns = [self._column(self._item_hashed, "categories", c) for c in categories]
        columns += [self._column(self._item_hashed, "tags", t) for t in tags]
        columns += self._hashed_columns("item", attributes, self._item_hashed)
        padded = np.full(MAX_CODES, -1, np.int32)
        kept = columns[:MAX_CODES]
        padded[:len(kept)] = kept
        numeric = np.array([_scaled(float(attributes[n])) if n in attributes else 0.0 for n in self.numeric["item"]],
                           np.float32)
        return ItemCodes(padded, numeric, _hash(categories[0]) if categories else 0)

    def item_features(self, vectors: np.ndarray, content: np.ndarray, columns: np.ndarray, numeric: np.ndarray
                      ) -> np.ndarray:
        """[n, 2048] from served vectors [n, dim], content vectors [n, dim], hashed columns [n, MAX_CODES] and
        numeric values [n, k]."""
        n = len(vectors)
        out = np.zeros((n, ITEM_DIM), np.float32)
        out[:, :self.dim] = vectors
        out[:, self.dim:2 * self.dim] = content
        out[:, 2 * self.dim:2 * self.dim + numeric.shape[1]] = numeric
        rows, slots = np.nonzero(columns >= 0)
        out[rows, columns[rows, slots]] = 1.0
        return out

    # -- users and requests ---------------------------------------------------------------------------

    def user_features(self, vectors: np.ndarray | None, attributes: Sequence[Mapping[str, Any] | None],
                      ) -> np.ndarray:
        """[b, 2048]: vectors [b, dim] (None: unknown users, left zero) and each user's declared attributes."""
        out = np.zeros((len(attributes), USER_DIM), np.float32)
        if vectors is not None:
            out[:, :self.dim] = vectors
        for row, attrs in enumerate(attributes):
            if not attrs:
                continue
            for k, name in enumerate(self.numeric["user"]):
                if name in attrs:
                    out[row, self.dim + k] = _scaled(float(attrs[name]))
            out[row, self._hashed_columns("user", attrs, self._user_hashed)] = 1.0
        return out

    def user_crosses(self, attributes: Mapping[str, Any] | None) -> list[str]:
        """The user's categorical values that pair with item categories in the cross part."""
        if not attributes:
            return []
        return [f"{name}={v}" for name in self.hashed["user"] if name in attributes
                for v in (attributes[name] if isinstance(attributes[name], list) else [attributes[name]])]

    def check_context(self, fields: Mapping[str, str], where: str = "context.fields") -> dict[str, object]:
        """Request context fields, typed by the schema; INVALID_ARGUMENT naming an undeclared or malformed one."""
        declared = self.schema.of("context")
        typed: dict[str, object] = {}
        for name, text in fields.items():
            kind = declared.get(name)
            if kind is None:
                raise InvalidArgument(f"{where}.{name}", f"not declared in schema {self.schema.name!r} for context "
                                                         f"(declared: {', '.join(sorted(declared)) or 'none'})")
            if kind == "numeric":
                try:
                    value = float(text)
                except ValueError:
                    raise InvalidArgument(f"{where}.{name}", f"expected a number, got {text!r}") from None
                if not math.isfinite(value):
                    raise InvalidArgument(f"{where}.{name}", f"expected a finite number, got {text!r}")
                typed[name] = value
            else:
                typed[name] = text
        return typed

    def context_features(self, hour: np.ndarray, weekday: np.ndarray, fields: Sequence[Mapping[str, Any]],
                         feature_tag: str = "") -> np.ndarray:
        """[b, 512]: hour and weekday one-hots, numeric and hashed context fields, the hashed feature tag."""
        b = len(hour)
        out = np.zeros((b, CONTEXT_DIM), np.float32)
        at = np.arange(b)
        out[at, np.asarray(hour) % 24] = 1.0
        out[at, 24 + np.asarray(weekday) % 7] = 1.0
        tag = self._column(self._context_hashed, "feature_tag", feature_tag)
        for row, values in enumerate(fields):
            for k, name in enumerate(self.numeric["context"]):
                if name in values:
                    out[row, _CONTEXT_FIXED + k] = _scaled(float(values[name]))
            out[row, self._hashed_columns("context", values, self._context_hashed)] = 1.0
            out[row, tag] = 1.0
        return out

    def cross_features(self, users: np.ndarray | None, crosses: Sequence[str], item_vectors: np.ndarray,
                       item_categories: np.ndarray, sources: np.ndarray, age_s: np.ndarray,
                       popularity: np.ndarray, ranks: np.ndarray | None = None, item_content: np.ndarray | None = None,
                       recent: RecentItems | None = None, trend: np.ndarray | None = None,
                       transition: np.ndarray | None = None, row_crosses: Sequence[Sequence[str]] | None = None
                       ) -> np.ndarray:
        """[n, 128]: user.item, source bits, freshness, log popularity, the rank of user.item, the history columns,
        the trend columns, hashed (user value x item category) pairs. `users` is [1, dim] (one request) or [n, dim];
        `crosses` the request's user values (user_crosses), or `row_crosses` each row's own; `ranks` where each item
        ranks by user.item (default: among these n, best first); `recent` the user's latest positive items, compared
        with the candidates' served vectors and `item_content` [n, dim] (no history: those columns stay zero);
        `trend` [n, len(TREND_HALF_LIVES)] the items' decayed popularity; `transition` [n, 2] the candidates' follow
        shares from the user's latest items (Transitions.scores)."""
        n = len(item_vectors)
        out = np.zeros((n, CROSS_DIM), np.float32)
        if users is not None:
            out[:, 0] = np.einsum("nd,nd->n", item_vectors, np.broadcast_to(users, item_vectors.shape))
            if ranks is None:  # per user scale-free: the order the learned vectors give, as a number
                ranks = np.empty(n, np.int64)
                ranks[np.argsort(-out[:, 0], kind="stable")] = np.arange(n)
            out[:, 7] = np.log1p(ranks) / _RANK_SCALE
        else:
            out[:, 7] = np.log1p(n) / _RANK_SCALE
        out[:, 1:5] = (sources[:, None].astype(np.int64) >> np.arange(4)) & 1
        out[:, 5] = np.exp(-np.clip(age_s, 0, None) / 86400 / FRESHNESS_DAYS)
        out[:, 6] = np.log1p(popularity) / 10
        if trend is not None:
            out[:, _TREND:_TREND + trend.shape[1]] = np.log1p(trend) / 10
        if transition is not None:
            out[:, _TRANSITION:_TRANSITION + 2] = transition
        if recent is not None:
            out[:, _HISTORY + 4] = np.log1p(recent.events) / _ACTIVITY_SCALE
            if recent.valid is not None:
                self._history_rows(out, item_vectors, item_content, recent)
            elif len(recent.vectors) and n:
                learned = _unit_rows(item_vectors) @ _unit_rows(recent.vectors).T  # [n, r] cosines
                out[:, _HISTORY] = learned.max(axis=1)
                out[:, _HISTORY + 1] = learned.mean(axis=1)
                out[:, _HISTORY + 2] = learned[:, 0]  # the newest: what the user did last
                if item_content is not None:
                    out[:, _HISTORY + 3] = (item_content @ recent.content.T).max(axis=1)
        start, end = self._cross_hashed
        categories = item_categories.astype(np.int64)
        for value in crosses:  # one hashed column per (user value, item category): who likes what
            out[np.arange(n), start + (_hash(value) ^ categories) % (end - start)] = 1.0
        for row, values in enumerate(row_crosses or ()):
            for value in values:
                out[row, start + (_hash(value) ^ categories[row]) % (end - start)] = 1.0
        return out

    @staticmethod
    def _history_rows(out: np.ndarray, item_vectors: np.ndarray, item_content: np.ndarray | None,
                      recent: RecentItems) -> None:
        """The history columns when each row has its own history: as for one shared history, over its valid items."""
        valid = recent.valid
        assert valid is not None
        has = valid.any(axis=1)
        learned = np.einsum("nw,nrw->nr", _unit_rows(item_vectors), _unit_rows(recent.vectors))
        out[:, _HISTORY] = np.where(has, np.where(valid, learned, -np.inf).max(axis=1, initial=-np.inf), 0)
        out[:, _HISTORY + 1] = (learned * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        out[:, _HISTORY + 2] = np.where(valid[:, 0], learned[:, 0], 0)
        if item_content is not None:
            similar = np.einsum("nd,nrd->nr", item_content, recent.content)
            out[:, _HISTORY + 3] = np.where(has, np.where(valid, similar, -np.inf).max(axis=1, initial=-np.inf), 0)


def assemble(user: np.ndarray, items: np.ndarray, context: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """The naive full matrix [n, 4736]: the user and context parts repeated on every row."""
    n = len(items)
    out = np.empty((n, FEATURE_DIM), dtype=np.float32)
    out[:, :USER_DIM] = user
    out[:, USER_DIM:USER_DIM + ITEM_DIM] = items
    out[:, USER_DIM + ITEM_DIM:USER_DIM + ITEM_DIM + CONTEXT_DIM] = context
    out[:, USER_DIM + ITEM_DIM + CONTEXT_DIM:] = cross
    return out
