"""Model residency under a memory budget: load on demand, LRU eviction of idle models, pinning, keep-alive."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from errors import InvalidArgument, ResourceExhausted
from generator.decoding import LanguageModel
from mesh.logging import get_logger

__all__ = ["ModelSpec", "ResidencyPool"]


@dataclass(frozen=True)
class ModelSpec:
    """A model the pool may load: its files, price, context, and the bytes it holds while resident (as measured:
    weights, ONNX Runtime's arena, the KV cache at full context; generator/measure.py)."""

    name: str
    graph: Path
    tokenizer: Path
    price_per_1k_tokens: float
    context: int
    bytes: int
    chat_template: str = ""
    repetition_penalty: float = 1.0

    def load(self) -> LanguageModel:
        return LanguageModel.load(self.name, self.graph, self.tokenizer, self.price_per_1k_tokens, self.context,
                                  chat_template=self.chat_template, repetition_penalty=self.repetition_penalty)


@dataclass
class _Resident:
    model: LanguageModel
    bytes: int
    users: int = 0
    last_used: float = 0.0


class ResidencyPool:
    """Holds at most `budget_bytes` of models. A model is loaded when a stage needs it; an idle one (no
    stage using it) stays for `keep_alive_s`, and is evicted earlier, least recently used first, when
    another needs the room. Pinned models are never evicted. A stage that cannot get room waits until
    its deadline, then gets RESOURCE_EXHAUSTED; a model larger than the whole budget is refused at once."""

    def __init__(self, specs: dict[str, ModelSpec], budget_bytes: int, keep_alive_s: float = 300.0,
                 pinned: tuple[str, ...] = (), on_change: Callable[[str, str, int], None] | None = None) -> None:
        unknown = set(pinned) - set(specs)
        if unknown:
            raise ValueError(f"pinned models {sorted(unknown)} are not configured")
        self.specs, self.budget, self.keep_alive_s, self.pinned = specs, budget_bytes, keep_alive_s, set(pinned)
        self.resident: OrderedDict[str, _Resident] = OrderedDict()
        self.reserved = 0  # bytes of loads in progress
        self.peak = 0
        self.loads = self.evictions = 0
        self._loading: dict[str, asyncio.Future] = {}
        self._changed = asyncio.Condition()
        self._on_change = on_change or (lambda event, name, used: None)
        self._log = get_logger("residency")

    @property
    def used(self) -> int:
        return sum(r.bytes for r in self.resident.values()) + self.reserved

    def spec(self, name: str) -> ModelSpec:
        if name not in self.specs:
            raise InvalidArgument("model", f"unknown model {name!r}; known: {sorted(self.specs)}")
        return self.specs[name]

    def fits_together(self, names: set[str]) -> bool:
        """Whether these models can all be resident at once (with the pinned ones)."""
        return sum(self.spec(n).bytes for n in names | self.pinned) <= self.budget

    @asynccontextmanager
    async def use(self, name: str, deadline: float | None = None) -> AsyncIterator[LanguageModel]:
        """The model, resident for the duration of the block."""
        model = await self._acquire(name, deadline)
        try:
            yield model
        finally:
            async with self._changed:
                entry = self.resident[name]
                entry.users -= 1
                entry.last_used = time.monotonic()
                self._changed.notify_all()

    async def _acquire(self, name: str, deadline: float | None) -> LanguageModel:
        spec = self.spec(name)
        if spec.bytes > self.budget:
            raise ResourceExhausted(f"model {name} needs {spec.bytes} bytes; the memory budget is {self.budget}")
        async with self._changed:
            while True:
                entry = self.resident.get(name)
                if entry is not None:
                    entry.users += 1
                    self.resident.move_to_end(name)
                    return entry.model
                if name not in self._loading and self._make_room(spec.bytes):
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ResourceExhausted(
                        f"model {name} ({spec.bytes} bytes) found no room in the {self.budget}-byte memory budget "
                        f"before the deadline; {self.used} bytes are in use")
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    continue
            self.reserved += spec.bytes
            self.peak = max(self.peak, self.used)
            self._loading[name] = asyncio.get_running_loop().create_future()
        try:
            started = time.monotonic()
            model = await asyncio.to_thread(spec.load)
        except BaseException:
            async with self._changed:
                self.reserved -= spec.bytes
                self._loading.pop(name).cancel()
                self._changed.notify_all()
            raise
        async with self._changed:
            self.reserved -= spec.bytes
            self.resident[name] = _Resident(model, spec.bytes, users=1, last_used=time.monotonic())
            self.loads += 1
            self._loading.pop(name).set_result(None)
            self._log.info("model loaded", model=name, bytes=spec.bytes, used=self.used, budget=self.budget,
                           load_ms=round((time.monotonic() - started) * 1e3, 1))
            self._on_change("load", name, self.used)
            self._changed.notify_all()
        return model

    def _make_room(self, need: int) -> bool:
        """Evict idle, unpinned models (least recently used first) until `need` bytes fit; False if they cannot."""
        idle = [n for n, r in self.resident.items() if r.users == 0 and n not in self.pinned]
        if self.budget - self.used + sum(self.resident[n].bytes for n in idle) < need:
            return False
        for name in idle:  # OrderedDict order is least recently used first
            if self.budget - self.used >= need:
                break
            self._evict(name, "room")
        return True

    def _evict(self, name: str, why: str) -> None:
        entry = self.resident.pop(name)
        self.evictions += 1
        self._log.info("model evicted", model=name, bytes=entry.bytes, why=why, used=self.used)
        self._on_change("evict", name, self.used)

    async def sweep(self) -> None:
        """Unload idle models whose keep-alive has run out (pinned ones stay)."""
        async with self._changed:
            now = time.monotonic()
            for name in [n for n, r in self.resident.items()
                         if r.users == 0 and n not in self.pinned and now - r.last_used > self.keep_alive_s]:
                self._evict(name, "keep-alive")
            self._changed.notify_all()

    async def preload(self) -> None:
        """Load the pinned models now, so the first request does not pay for them."""
        for name in sorted(self.pinned):
            async with self.use(name):
                pass
