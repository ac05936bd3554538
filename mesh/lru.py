"""The one LRU cache: bounded by count and optionally by bytes (in total and per owner), refreshed on every hit,
optionally grouped so that a group drops at once.

A group is whatever must be forgotten together (a user's feeds and answers when they interact).
An owner is whoever must not crowd out the others (a tenant): past its byte share, its own least recently used
entries go, not anybody else's. Evicting the last entry of a group or an owner removes its index too, so no
empty index is left behind.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["LruCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    group: Hashable
    owner: Hashable
    size: int


class LruCache(Generic[K, V]):
    """At most `capacity` entries and `max_bytes` bytes (the sizes `put` is given), at most `max_owner_bytes` of
    them one owner's; `get` refreshes recency, `put` evicts the least recently used. An entry larger than a
    bound is not kept at all."""

    def __init__(self, capacity: int, max_bytes: int | None = None, max_owner_bytes: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity is expected to be at least 1, got {capacity}")
        self.capacity, self.max_bytes, self.max_owner_bytes = capacity, max_bytes, max_owner_bytes
        self.bytes = 0
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._groups: dict[Hashable, set[K]] = {}
        self._owned: dict[Hashable, OrderedDict[K, None]] = {}  # per owner, its keys from least recently used
        self._owner_bytes: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def owner_bytes(self, owner: Hashable) -> int:
        return self._owner_bytes.get(owner, 0)

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None if absent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        if entry.owner is not None:
            self._owned[entry.owner].move_to_end(key)
        return entry.value

    def put(self, key: K, value: V, group: Hashable = None, size: int = 0, owner: Hashable = None) -> bool:
        """Keep `value` (of `size` bytes, owned by `owner`); returns False when it is larger than a bound."""
        self.pop(key)
        if (self.max_bytes is not None and size > self.max_bytes) or (
                owner is not None and self.max_owner_bytes is not None and size > self.max_owner_bytes):
            return False
        self._entries[key] = _Entry(value, group, owner, size)
        self.bytes += size
        if group is not None:
            self._groups.setdefault(group, set()).add(key)
        if owner is not None:
            self._owned.setdefault(owner, OrderedDict())[key] = None
            self._owner_bytes[owner] = self._owner_bytes.get(owner, 0) + size
            if self.max_owner_bytes is not None:
                while self._owner_bytes[owner] > self.max_owner_bytes:
                    self.pop(next(iter(self._owned[owner])))
        while len(self._entries) > self.capacity or (self.max_bytes is not None and self.bytes > self.max_bytes):
            self.pop(next(iter(self._entries)))
        return True

    def pop(self, key: K) -> V | None:
        """Remove one entry; returns its value, or None."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.bytes -= entry.size
        if entry.group is not None:
            members = self._groups.get(entry.group)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._groups[entry.group]
        if entry.owner is not None:
            owned = self._owned[entry.owner]
            del owned[key]
            self._owner_bytes[entry.owner] -= entry.size
            if not owned:
                del self._owned[entry.owner], self._owner_bytes[entry.owner]
        return entry.value

    def drop_group(self, group: Hashable) -> int:
        """Remove every entry of `group`; returns how many."""
        keys = list(self._groups.get(group, ()))
        for key in keys:
            self.pop(key)
        return len(keys)

    def group_count(self) -> int:
        """Groups with at least one entry."""
        return len(self._groups)
