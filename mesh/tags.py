"""Feature tags: the names a client may give its traffic, and a bound on how many distinct ones are kept."""

from __future__ import annotations

import re
import threading

from errors import InvalidArgument

__all__ = ["MAX_TAG_BYTES", "MAX_TAGS", "OTHER", "UNTAGGED", "check_feature_tag", "TagBook"]

MAX_TAG_BYTES = 64
MAX_TAGS = 256  # distinct tags booked per process; later new ones are booked as OTHER
OTHER = "other"
UNTAGGED = "untagged"
_TAG = re.compile(r"[a-z0-9_.-]*")


def check_feature_tag(tag: str, field: str = "context.feature_tag") -> None:
    """INVALID_ARGUMENT naming `field` unless the tag is empty or at most 64 characters of [a-z0-9_.-]: a tag
    becomes a cost-ledger key and a Prometheus label, so what a client may put there is bounded."""
    if len(tag) > MAX_TAG_BYTES:
        raise InvalidArgument(field, f"is {len(tag)} characters long; the limit is {MAX_TAG_BYTES}")
    if not _TAG.fullmatch(tag):
        raise InvalidArgument(field, f"{tag!r} may hold only lower-case letters, digits, '_', '.' and '-'")


class TagBook:
    """The tags booked so far, at most `capacity`: a tag seen before (or while there is room) is itself, empty is
    UNTAGGED, and a new one past the cap is OTHER, so a client inventing tags cannot grow memory or labels."""

    def __init__(self, capacity: int = MAX_TAGS) -> None:
        self.capacity = capacity
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def book(self, tag: str) -> str:
        tag = tag or UNTAGGED
        with self._lock:
            if tag in self._known:
                return tag
            if len(self._known) >= self.capacity:
                return OTHER
            self._known.add(tag)
            return tag
