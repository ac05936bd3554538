"""Progress on stderr for long CLI work: a bar for counted steps, a ticking line for a step that cannot count."""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress", "working", "TICK_S"]

TICK_S = 5.0  # off a terminal, a line at least this often while work runs: a log shows that long work is moving


class Progress:
    """Draws `label [#####.....] 50% 1.2s note`; redraws in place on a terminal, a line every TICK_S otherwise.

    It draws once when created (a step says at once that it has begun) and, while unfinished, again every TICK_S
    even when no step completes (a slow step is not silence)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30,
                 tick_s: float = TICK_S) -> None:
        self.label, self.total, self.width = label, max(total, 1), width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.monotonic()
        self._tty = self.stream.isatty()
        self._last = self.start
        self._note = ""
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._draw()
        if tick_s > 0:  # the ticker holds the bar weakly: a bar dropped unfinished (an error) stops its ticker
            threading.Thread(target=_tick, args=(weakref.ref(self), self._finished, tick_s), daemon=True,
                             name="progress-tick").start()

    def advance(self, steps: int = 1, note: str = "") -> None:
        with self._lock:
            self.done = min(self.done + steps, self.total)
            self._note = note or self._note
            now = time.monotonic()
            if self._tty or self.done == self.total or now - self._last >= TICK_S:
                self._draw()
            if self.done == self.total:
                self._finished.set()

    def close(self) -> None:
        """Stop ticking (for a bar left unfinished on purpose)."""
        self._finished.set()

    def _redraw_if_quiet(self, every: float) -> None:
        with self._lock:
            if not self._finished.is_set() and time.monotonic() - self._last >= every:
                self._draw()

    def _draw(self) -> None:
        self._last = time.monotonic()
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        pct = 100 * self.done // self.total
        line = f"{self.label} [{bar}] {pct:3d}% {self._last - self.start:5.1f}s {self._note}"
        end = "\n" if self.done == self.total or not self._tty else ""
        self.stream.write(("\r" if self._tty else "") + line.ljust(self.width + 40) + end)
        self.stream.flush()


def _tick(ref: weakref.ref[Progress], finished: threading.Event, every: float) -> None:
    while not finished.wait(every):  # a timer, woken early when the bar completes
        progress = ref()
        if progress is None:
            return
        progress._redraw_if_quiet(every)
        del progress


@contextmanager
def working(label: str, stream: TextIO | None = None) -> Iterator[None]:
    """A step that cannot count its work (one library call): a one-step bar that ticks while it runs."""
    progress = Progress(label, 1, stream=stream)
    try:
        yield
        progress.advance()
    finally:
        progress.close()
