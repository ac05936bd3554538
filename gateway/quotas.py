"""Per-tenant quotas: requests per second (a token bucket) and requests in flight, each tenant on its own.

One tenant's burst spends only its own bucket and its own in-flight allowance, so it cannot shed another
tenant's feeds. A refused request gets RESOURCE_EXHAUSTED with the time until a token is due.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from errors import ResourceExhausted

__all__ = ["Quota", "TenantQuotas", "DEFAULT_QUOTA"]


@dataclass(frozen=True)
class Quota:
    """Limits for one tenant: sustained rate, burst above it, and concurrent requests (0: no limit)."""

    requests_per_s: float = 0.0
    burst: float = 0.0  # bucket size; 0 means one second's worth of requests_per_s
    in_flight: int = 0


# What every shipped deployment (feedserve up, compose, k8s) gives a tenant unless told otherwise: 8 in flight is
# half of the generator's 16 slots and a sixth of the in-flight depth that turns on emergency mode (48), so one
# tenant alone can neither take every generation nor push the mode to emergency; 200/s with bursts of 400 is
# above what a 2-core stack serves in all.
DEFAULT_QUOTA = "200:400:8"


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


@dataclass
class TenantQuotas:
    """The default quota for every tenant, and overrides by tenant name."""

    default: Quota = Quota()
    overrides: dict[str, Quota] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def quota(self, tenant: str) -> Quota:
        return self.overrides.get(tenant, self.default)

    def admit(self, tenant: str) -> Callable[[], None]:
        """Take a token and an in-flight place for `tenant`, or raise ResourceExhausted; returns the release."""
        with self._lock:
            refusal, bucket = self._check(tenant, take=True)
            if refusal is not None:
                raise refusal

        def release() -> None:
            with self._lock:
                bucket.in_flight -= 1

        return release

    def refusal(self, tenant: str) -> ResourceExhausted | None:
        """What `admit` would raise for `tenant` now, taking nothing: lets the door refuse a call before its
        request is even parsed (a later `admit` still decides)."""
        with self._lock:
            return self._check(tenant, take=False)[0]

    def _check(self, tenant: str, take: bool) -> tuple[ResourceExhausted | None, _Bucket]:
        """Under the lock: the tenant's bucket, refilled to now, and the refusal a call would get (None: admitted,
        and with `take` a token and an in-flight place taken)."""
        quota = self.quota(tenant)
        capacity = quota.burst or quota.requests_per_s
        now = self.clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(tokens=capacity, stamp=now)
        if quota.in_flight and bucket.in_flight >= quota.in_flight:
            return ResourceExhausted(f"tenant {tenant} has {bucket.in_flight} requests in flight "
                                     f"(quota {quota.in_flight})", retry_after_s=0.05), bucket
        if quota.requests_per_s > 0:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * quota.requests_per_s)
            bucket.stamp = now
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / quota.requests_per_s
                return ResourceExhausted(f"tenant {tenant} is over its quota of {quota.requests_per_s:g} requests/s",
                                         retry_after_s=wait), bucket
            if take:
                bucket.tokens -= 1.0
        if take:
            bucket.in_flight += 1
        return None, bucket

    @staticmethod
    def parse(spec: str) -> Quota:
        """`RPS[:BURST[:IN_FLIGHT]]`, e.g. `200:400:50` (0 or empty: no limit)."""
        parts = (spec.split(":") + ["", "", ""])[:3]
        try:
            rate, burst, flight = (float(parts[0] or 0), float(parts[1] or 0), int(parts[2] or 0))
        except ValueError:
            raise ValueError(f"quota {spec!r} is expected as RPS[:BURST[:IN_FLIGHT]], e.g. 200:400:50") from None
        if rate < 0 or burst < 0 or flight < 0:
            raise ValueError(f"quota {spec!r} has a negative part")
        return Quota(rate, burst, flight)
