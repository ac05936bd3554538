"""The one LRU cache: bounded, refreshed on every hit, optionally grouped so that a group drops at once.

A group is whatever must be forgotten together (a user's feeds, answers and page cursors when they interact).
Evicting the last entry of a group removes the group too, so no empty index is left behind.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["LruCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most `capacity` entries; `get` refreshes recency, `put` evicts the least recently used."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity is expected to be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[K, tuple[Hashable, V]] = OrderedDict()
        self._groups: dict[Hashable, set[K]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None if absent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, group: Hashable = None) -> None:
        self.pop(key)
        self._entries[key] = (group, value)
        if group is not None:
            self._groups.setdefault(group, set()).add(key)
        while len(self._entries) > self.capacity:
            self.pop(next(iter(self._entries)))

    def pop(self, key: K) -> V | None:
        """Remove one entry; returns its value, or None."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        group, value = entry
        if group is not None:
            members = self._groups.get(group)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._groups[group]
        return value

    def drop_group(self, group: Hashable) -> int:
        """Remove every entry of `group`; returns how many."""
        keys = self._groups.pop(group, set())
        for key in keys:
            self._entries.pop(key, None)
        return len(keys)

    def group_count(self) -> int:
        """Groups with at least one entry."""
        return len(self._groups)
