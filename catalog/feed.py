"""The change feed followers: one applies the store's item changes to a process's derived state, in order, from a
sequence; one hands each change of the model registry to the service that follows it."""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Self

import structlog

from catalog.records import StoredItem
from catalog.registry import Registry
from catalog.store import Store
from errors import Unavailable

__all__ = ["ChangeFollower", "Apply", "Poller", "RegistryWatcher"]

log = structlog.get_logger("catalog.feed")

# Called with a batch of changed items (latest state, tombstones included) and the sequence the batch reaches.
Apply = Callable[[list[StoredItem], int], object]  # whatever it returns is ignored


class Poller(ABC):
    """A daemon thread that calls `step()` until stopped: again at once while it reports work done, else after
    `poll_s`. A store that is down pauses it (logged once per distinct error), never kills it."""

    name = "poller"
    nice = 0  # raised for background work that must yield the CPU to requests (Linux: per thread)

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self.error: str = ""  # the last failure to reach the store, while it lasts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def step(self) -> int:
        """One round of work; returns how much was done (0: nothing to do until the next poll)."""

    def _run(self) -> None:
        if self.nice:
            try:  # threads created from here on (an engine's pool) inherit it
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError):
                log.warning("cannot lower the priority of background work", poller=self.name)
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.step() > 0
                self.error = ""
            except Unavailable as exc:  # the store is down: keep serving what we have, retry
                if str(exc) != self.error:
                    log.warning(f"{self.name} paused", error=str(exc))
                self.error = str(exc)
            if not busy:
                self._stop.wait(self.poll_s)  # the poll interval, not synchronisation

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class ChangeFollower(Poller):
    """Polls the store from `after` and hands each batch to `apply`, then advances `applied`.

    `applied` only moves once `apply` has returned, so a process that persists it beside its derived state
    resumes exactly where it stopped. `wait_for(seq)` serves read-your-writes (`min_sequence`)."""

    name = "change feed"

    def __init__(self, store: Store, apply: Apply, after: int = 0, poll_s: float = 0.05, batch: int = 10_000) -> None:
        super().__init__(poll_s)
        self.store, self.apply = store, apply
        self.applied = after
        self.batch = batch
        self._changed = threading.Condition()

    def step(self) -> int:
        self.poll()
        return 0  # everything committed is applied: wait for the next poll

    def poll(self) -> int:
        """Apply everything committed so far; returns how many item changes were applied."""
        applied = 0
        while True:
            items, reached = self.store.changes(self.applied, self.batch)
            if items or reached > self.applied:
                self.apply(items, reached)
                applied += len(items)
                with self._changed:
                    self.applied = reached
                    self._changed.notify_all()
            if len(items) < self.batch:
                return applied

    def wait_for(self, seq: int, timeout_s: float) -> bool:
        """Block until `seq` is applied or the timeout passes; True when applied."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.applied < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True


class RegistryWatcher(Poller):
    """Calls `on_change(registry)` with the registry now and after every change to it, from any process on the same
    store: `check` (or the thread `start` runs, every `poll_s`) reads the registry's sequence number, one row, and
    reads the registry itself only when that moved."""

    name = "registry feed"

    def __init__(self, store: Store, on_change: Callable[[Registry], object], poll_s: float = 0.2) -> None:
        super().__init__(poll_s)
        self.store, self.on_change = store, on_change
        self.seen = -1
        self.check()

    def check(self) -> bool:
        """Hand on the registry if it changed since the last check; True when it did."""
        if self.store.registry_sequence() == self.seen:
            return False
        registry = self.store.registry()
        self.seen = registry.revision
        self.on_change(registry)
        return True

    def step(self) -> int:
        try:
            self.check()
        except Unavailable:
            raise
        except Exception as exc:  # a change the service cannot apply must not stop the following: the next one is read
            log.warning("registry change not applied", error=str(exc))
        return 0
