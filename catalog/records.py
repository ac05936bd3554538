"""What the catalog holds (items, users, events) and the checks every write passes before it reaches the store."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from catalog.schema import AttributeValue, Schema
from errors import InvalidArgument

__all__ = [
    "EVENT_NAMES",
    "check_key",
    "MAX_KEY",
    "OBJECTIVES", "Item", "User", "Event", "StoredItem", "MAX_BATCH", "MAX_ID_BYTES", "MAX_TEXT_BYTES",
    "check_id", "check_items", "check_users", "check_events", "check_event_time", "check_batch", "MAX_CLOCK_SKEW_S",
]

MAX_BATCH = 10_000
# EventType values of feedserve.v1, by name (the catalog does not depend on the generated code).
EVENT_NAMES = {"impression": 1, "click": 2, "like": 3, "share": 4, "dwell": 5, "skip": 6, "dislike": 7}
OBJECTIVES = ("click", "like", "dwell", "share")  # what the ranker predicts, one head each, in this order
MAX_ID_BYTES = 256
MAX_TEXT_BYTES = 65_536
MAX_LABELS = 64  # categories or tags per item


@dataclass
class Item:
    """An item as a product sends it; `published` is seconds since the epoch (0: unknown)."""

    external_id: str
    title: str = ""
    text: str = ""
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    published: int = 0
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    hidden: bool = False


@dataclass
class StoredItem(Item):
    """An item as the change feed delivers it: its dense id, the sequence of its last change, whether it is gone,
    its content vector (None until the encoder has computed it), and its served vector in the active learned
    `space` (what retrieval, ranking and drift use; the content vector while no space is served)."""

    id: int = 0
    seq: int = 0
    deleted: bool = False
    vector: np.ndarray | None = None
    content: np.ndarray | None = None
    space: int = 0

    @property
    def servable(self) -> bool:
        """Whether retrieval and ranking may show it."""
        return not (self.deleted or self.hidden)


@dataclass
class User:
    external_id: str
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass
class Event:
    """What a user did to an item: an EventType value, when (seconds; 0: on arrival), and an optional value
    (a rating, dwell milliseconds; NaN when absent)."""

    user: str
    item: str
    event: int
    timestamp: int = 0
    value: float = math.nan


def check_batch(rows: Sequence[object], name: str) -> None:
    if not rows:
        raise InvalidArgument(name, "expected at least one row")
    if len(rows) > MAX_BATCH:
        raise InvalidArgument(name, f"at most {MAX_BATCH} rows per call, got {len(rows)}")


def check_id(value: str, where: str) -> None:
    """An external id is 1..256 bytes of UTF-8."""
    size = len(value.encode())
    if not 1 <= size <= MAX_ID_BYTES:
        raise InvalidArgument(where, f"expected 1..{MAX_ID_BYTES} bytes, got {size}")


MAX_KEY = 2**63 - 1  # numeric ids travel as uint64 but are stored as positive int64


def check_key(value: int, where: str) -> int:
    """A numeric id: 1..2^63-1 (the protos say uint64; the tables key by int64)."""
    if not 1 <= value <= MAX_KEY:
        raise InvalidArgument(where, f"expected 1..2^63-1, got {value}")
    return value


MAX_CLOCK_SKEW_S = 300  # how far a caller's clock may run ahead of ours before its event counts as from the future


def check_event_time(value: int, where: str) -> int:
    """When an event happened, in seconds since the epoch: 0 (unset) or a past moment (never later than now)."""
    if value < 0:
        raise InvalidArgument(where, f"expected seconds since the epoch, got {value}")
    now = time.time()
    if value > now + MAX_CLOCK_SKEW_S:
        raise InvalidArgument(where, f"{value} is in the future (now is {int(now)}): an event cannot be dated after it")
    return value


def _check_text(value: str, where: str) -> None:
    size = len(value.encode())
    if size > MAX_TEXT_BYTES:
        raise InvalidArgument(where, f"at most {MAX_TEXT_BYTES} bytes, got {size}")


def _check_labels(values: list[str], where: str) -> None:
    if len(values) > MAX_LABELS:
        raise InvalidArgument(where, f"at most {MAX_LABELS} values, got {len(values)}")
    for index, value in enumerate(values):
        if not 1 <= len(value.encode()) <= MAX_ID_BYTES:
            raise InvalidArgument(f"{where}[{index}]", f"expected 1..{MAX_ID_BYTES} bytes")


def check_items(items: Sequence[Item], schema: Schema, name: str = "items") -> None:
    """Every row checked before any is written: the first bad one raises, naming its index and field."""
    check_batch(items, name)
    seen: dict[str, int] = {}
    for row, item in enumerate(items):
        where = f"{name}[{row}]"
        check_id(item.external_id, f"{where}.id")
        if item.external_id in seen:
            raise InvalidArgument(f"{where}.id", f"repeats the id of row {seen[item.external_id]}")
        seen[item.external_id] = row
        _check_text(item.title, f"{where}.title")
        _check_text(item.text, f"{where}.text")
        _check_labels(item.categories, f"{where}.categories")
        _check_labels(item.tags, f"{where}.tags")
        if item.published < 0:
            raise InvalidArgument(f"{where}.published", f"expected seconds since the epoch, got {item.published}")
        item.attributes = schema.check_attributes("item", item.attributes, where)


def check_users(users: Sequence[User], schema: Schema, name: str = "users") -> None:
    check_batch(users, name)
    for row, user in enumerate(users):
        where = f"{name}[{row}]"
        check_id(user.external_id, f"{where}.id")
        user.attributes = schema.check_attributes("user", user.attributes, where)


def check_events(events: Sequence[Event], known_events: frozenset[int], name: str = "events") -> None:
    check_batch(events, name)
    for row, event in enumerate(events):
        where = f"{name}[{row}]"
        check_id(event.user, f"{where}.user")
        check_id(event.item, f"{where}.item")
        if event.event not in known_events:
            raise InvalidArgument(f"{where}.event", f"unknown event type {event.event}")
        check_event_time(event.timestamp, f"{where}.timestamp")
        if math.isinf(event.value):
            raise InvalidArgument(f"{where}.value", f"expected a finite number, got {event.value}")
