"""Content vectors off the request path: a background worker encodes items that have none, in batches, and writes the
vectors back to the store, where the change feed carries them to every process that serves items."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import structlog

from catalog.store import Store
from mesh.errors import Unavailable

__all__ = ["ContentEncoder", "Encode"]

log = structlog.get_logger("catalog.encoding")

Encode = Callable[[list[str]], np.ndarray]  # texts -> float32 [n, dim] unit vectors


class ContentEncoder:
    """Encodes pending content (each distinct title, text and categories once) until none is left, then waits.

    Several encoders on one store are safe: a vector written twice for the same content is the same vector."""

    def __init__(self, store: Store, encode: Encode, batch: int = 256, poll_s: float = 0.05) -> None:
        self.store, self.encode, self.batch, self.poll_s = store, encode, batch, poll_s
        self.encoded = 0  # distinct contents encoded by this worker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> int:
        """Encode one batch of pending content; returns how many contents it encoded (0: nothing pending)."""
        pending = self.store.pending_content(self.batch)
        if not pending:
            return 0
        vectors = self.encode([text for _, text in pending])
        self.store.set_content_vectors({key: vector for (key, _), vector in zip(pending, vectors)})
        self.encoded += len(pending)
        return len(pending)

    def drain(self) -> int:
        """Encode until nothing is pending; returns how many contents were encoded."""
        total = 0
        while (done := self.step()):
            total += done
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.step():
                    continue
            except Unavailable as exc:
                log.warning("content encoding paused", error=str(exc))
            self._stop.wait(self.poll_s)  # the poll interval, not synchronisation

    def start(self) -> ContentEncoder:
        self._thread = threading.Thread(target=self._run, name="content-encoder", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
