"""Hash-slot sharding of keys across paramserver instances, with the slot map in configuration.

Like Redis Cluster: 16,384 slots, each key hashed to one, contiguous slot ranges owned by shards.
The map is written `0-8191=host:port,8192-16383=host:port`; every slot must be owned exactly once.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

import numpy as np

__all__ = ["SLOTS", "slot_of", "SlotRange", "SlotMap", "parse_slot_range", "shard_slots"]

SLOTS = 16_384


def slot_of(keys: np.ndarray) -> np.ndarray:
    """The slot of each key: a Fibonacci hash of the 64-bit key, top 14 bits."""
    mixed = np.asarray(keys).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return (mixed >> np.uint64(50)).astype(np.int64)


@dataclass(frozen=True)
class SlotRange:
    first: int
    last: int

    def owns(self, keys: np.ndarray) -> np.ndarray:
        slots = slot_of(keys)
        return (slots >= self.first) & (slots <= self.last)

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_slot_range(text: str) -> SlotRange:
    first, sep, last = text.partition("-")
    try:
        span = SlotRange(int(first), int(last if sep else first))
    except ValueError:
        raise ValueError(f"slot range {text!r} is expected as FIRST-LAST") from None
    if not 0 <= span.first <= span.last < SLOTS:
        raise ValueError(f"slot range {text!r} is expected within 0-{SLOTS - 1}")
    return span


def shard_slots(spec: str) -> SlotRange:
    """`INDEX/COUNT` (or `auto/COUNT`, INDEX from the hostname's trailing -N) -> that shard's equal slot range."""
    index, sep, count = spec.partition("/")
    if index == "auto":
        match = re.search(r"-(\d+)$", socket.gethostname())
        if match is None:
            raise ValueError(f"--shard auto needs a hostname ending in -N, got {socket.gethostname()!r}")
        index = match.group(1)
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"shard {spec!r} is expected as INDEX/COUNT") from None
    if not (sep and 0 <= i < n <= SLOTS):
        raise ValueError(f"shard {spec!r} is expected as INDEX/COUNT with 0 <= INDEX < COUNT")
    return SlotRange(i * SLOTS // n, (i + 1) * SLOTS // n - 1)


@dataclass(frozen=True)
class SlotMap:
    """Which address owns which slots."""

    shards: tuple[tuple[SlotRange, str], ...]

    @classmethod
    def parse(cls, text: str) -> SlotMap:
        shards: list[tuple[SlotRange, str]] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            span, sep, address = part.partition("=")
            if not sep or not address:
                raise ValueError(f"shard {part!r} is expected as FIRST-LAST=HOST:PORT")
            shards.append((parse_slot_range(span), address))
        owner = np.zeros(SLOTS, np.int64)
        for owned, _ in shards:
            owner[owned.first:owned.last + 1] += 1
        if shards and not (owner == 1).all():
            raise ValueError(f"the slot map must own every slot exactly once: {text!r}")
        return cls(tuple(shards))

    @classmethod
    def single(cls, address: str) -> SlotMap:
        return cls(((SlotRange(0, SLOTS - 1), address),))

    def shard_of(self, keys: np.ndarray) -> np.ndarray:
        """Index into `shards` for every key."""
        slots = slot_of(keys)
        starts = np.array([span.first for span, _ in self.shards])
        order = np.argsort(starts)
        return order[np.searchsorted(starts[order], slots, side="right") - 1]
