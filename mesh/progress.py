"""A one-line progress bar on stderr for long first-run work (world and model builds)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Draws `label [#####.....] 50% 1.2s`; redraws in place on a terminal, one line otherwise."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.total, self.width = label, max(total, 1), width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.monotonic()
        self._tty = self.stream.isatty()
        self._last = self.start  # off a terminal, a line every few seconds: a log shows long work moving

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.done = min(self.done + steps, self.total)
        now = time.monotonic()
        if self._tty or self.done == self.total or now - self._last >= 5.0:
            self._last = now
            self._draw(note)

    def _draw(self, note: str) -> None:
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        pct = 100 * self.done // self.total
        line = f"{self.label} [{bar}] {pct:3d}% {time.monotonic() - self.start:5.1f}s {note}"
        end = "\n" if self.done == self.total or not self._tty else ""
        self.stream.write(("\r" if self._tty else "") + line.ljust(self.width + 40) + end)
        self.stream.flush()
