"""The change feed follower: applies the store's item changes to a process's derived state, in order, from a sequence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from catalog.records import StoredItem
from catalog.store import Store
from mesh.errors import Unavailable

__all__ = ["ChangeFollower", "Apply"]

log = structlog.get_logger("catalog.feed")

# Called with a batch of changed items (latest state, tombstones included) and the sequence the batch reaches.
Apply = Callable[[list[StoredItem], int], None]


class ChangeFollower:
    """Polls the store from `after` and hands each batch to `apply`, then advances `applied`.

    `applied` only moves once `apply` has returned, so a process that persists it beside its derived state
    resumes exactly where it stopped. `wait_for(seq)` serves read-your-writes (`min_sequence`)."""

    def __init__(self, store: Store, apply: Apply, after: int = 0, poll_s: float = 0.05, batch: int = 10_000) -> None:
        self.store, self.apply = store, apply
        self.applied = after
        self.poll_s, self.batch = poll_s, batch
        self.error: str = ""  # the last failure to reach the store, while it lasts
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
                self.error = ""
            except Unavailable as exc:  # the store is down: keep serving what we have, retry
                if str(exc) != self.error:
                    log.warning("change feed paused", error=str(exc))
                self.error = str(exc)
            self._stop.wait(self.poll_s)  # the poll interval, not synchronisation

    def start(self) -> ChangeFollower:
        self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
