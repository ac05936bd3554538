"""How far each interaction moves a user's vector toward (or away from) the item's (the move is in native/)."""

from __future__ import annotations

from catalog.drift import DEFAULT_RATES
from feedserve.v1 import common_pb2
from mesh.errors import InvalidArgument

__all__ = ["DEFAULT_RATES", "parse_rates"]



def parse_rates(spec: str) -> dict[int, float]:
    """Override default rates from `like=0.1,skip=-0.02` (event names without the prefix)."""
    rates = dict(DEFAULT_RATES)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        key = f"EVENT_TYPE_{name.strip().upper()}"
        if key not in common_pb2.EventType.keys() or key == "EVENT_TYPE_UNSPECIFIED":
            raise InvalidArgument("drift_rates", f"unknown event {name.strip()!r}")
        rate = float(value)
        if not -1.0 <= rate <= 1.0:
            raise InvalidArgument("drift_rates", f"rate for {name.strip()} is expected in [-1, 1], got {rate}")
        rates[common_pb2.EventType.Value(key)] = rate
    return rates
