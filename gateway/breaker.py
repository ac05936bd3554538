"""A circuit breaker per dependency: open after consecutive failures, probe again after a cool-down."""

from __future__ import annotations

import time

__all__ = ["CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    """Closed: calls pass. After `threshold` consecutive failures: open, calls are refused at once so the
    fallback answers. After `cooldown_s`: half-open, one probe passes; its success closes the circuit."""

    def __init__(self, name: str, threshold: int = 3, cooldown_s: float = 2.0) -> None:
        self.name, self.threshold, self.cooldown_s = name, threshold, cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if time.monotonic() - self.opened_at >= self.cooldown_s else OPEN

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one probe at a time."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self._probing = 0, None, False

    def failed(self) -> None:
        self._probing = False
        self.failures += 1
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = time.monotonic()  # (re)open: a failed probe restarts the cool-down
