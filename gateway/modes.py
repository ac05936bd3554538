"""Burst modes: normal, surge, emergency; chosen from queue depth and latency with hysteresis, or forced."""

from __future__ import annotations

import time
from dataclasses import dataclass

from feedserve.v1 import gateway_pb2

__all__ = ["ModeSettings", "ModeController", "SETTINGS"]


@dataclass(frozen=True)
class ModeSettings:
    """The concrete switches a mode flips."""

    candidate_count: int
    ranker_timeout_s: float
    max_in_flight: int
    generation_enabled: bool
    batch_delay_us: int  # how long the ranker may hold a request to batch it with others


SETTINGS: dict[int, ModeSettings] = {
    gateway_pb2.MODE_NORMAL: ModeSettings(2_400, 0.200, 64, True, 0),
    gateway_pb2.MODE_SURGE: ModeSettings(1_200, 0.100, 64, True, 1_000),
    gateway_pb2.MODE_EMERGENCY: ModeSettings(400, 0.050, 32, False, 2_000),
}

# (enter when in-flight >= or latency EWMA >=) and (leave when both below), per mode above normal
_ENTER: dict[int, tuple[int, float]] = {gateway_pb2.MODE_SURGE: (16, 0.050), gateway_pb2.MODE_EMERGENCY: (48, 0.200)}
_LEAVE: dict[int, tuple[int, float]] = {gateway_pb2.MODE_SURGE: (8, 0.030), gateway_pb2.MODE_EMERGENCY: (24, 0.120)}
_HOLD_S = 2.0  # a mode is kept at least this long before stepping down


class ModeController:
    def __init__(self) -> None:
        self.mode: int = gateway_pb2.MODE_NORMAL
        self.forced: int | None = None
        self.reason = "start"
        self.latency_ewma = 0.0
        self.in_flight = 0
        self._since = time.monotonic()

    @property
    def current(self) -> int:
        return self.forced if self.forced is not None else self.mode

    @property
    def settings(self) -> ModeSettings:
        return SETTINGS[self.current]

    def force(self, mode: int) -> None:
        """Force a mode; MODE_UNSPECIFIED hands control back to the automatic switch."""
        self.forced = None if mode == gateway_pb2.MODE_UNSPECIFIED else mode

    def observe(self, latency_s: float) -> None:
        """Fold a finished request's latency in, then reconsider the mode."""
        self.latency_ewma = 0.9 * self.latency_ewma + 0.1 * latency_s
        self._reconsider()

    def _reconsider(self) -> None:
        now = time.monotonic()
        for mode in (gateway_pb2.MODE_EMERGENCY, gateway_pb2.MODE_SURGE):
            depth, latency = _ENTER[mode]
            if mode > self.mode and (self.in_flight >= depth or self.latency_ewma >= latency):
                self._switch(mode, f"in_flight={self.in_flight} latency_ewma_ms={self.latency_ewma * 1e3:.1f}", now)
                return
        if self.mode != gateway_pb2.MODE_NORMAL and now - self._since >= _HOLD_S:
            depth, latency = _LEAVE[self.mode]
            if self.in_flight < depth and self.latency_ewma < latency:
                self._switch(self.mode - 1, "load fell below the mode's exit thresholds", now)

    def _switch(self, mode: int, reason: str, now: float) -> None:
        self.mode, self.reason, self._since = mode, reason, now

    def status(self) -> gateway_pb2.ModeStatus:
        settings = self.settings
        return gateway_pb2.ModeStatus(
            mode=self.current,  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
            forced=self.forced is not None, reason="forced" if self.forced is not None else self.reason,
            candidate_count=settings.candidate_count, generation_enabled=settings.generation_enabled,
            in_flight=self.in_flight, batch_delay_us=settings.batch_delay_us,
        )
