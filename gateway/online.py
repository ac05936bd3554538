"""Online metrics per model version: every served feed is logged with each item's position and score (propensity
logging), an interaction that names its feed is attributed to the version that answered it, and each version's
click-through at k, likes, skips, errors and latency are counted from that, for Prometheus, the dashboard and the
guardrails."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from catalog.online_rows import CountRow
from feedserve.v1 import common_pb2, gateway_pb2
from mesh.lru import LruCache
from mesh.percentiles import p50_p99

__all__ = ["Tally", "OnlineMetrics", "OnlineMetricsCollector", "PropensityLog", "ONLINE_K", "summed"]

ONLINE_K = 10  # click-through is counted over a feed's first ten positions
_RECENT_FEEDS = 100_000  # feeds an interaction can still be attributed to (about 300 bytes each at k = 20)
_LATENCIES = 2_000
_CLICKS = frozenset({common_pb2.EVENT_TYPE_CLICK, common_pb2.EVENT_TYPE_LIKE, common_pb2.EVENT_TYPE_SHARE,
                     common_pb2.EVENT_TYPE_DWELL})


@dataclass
class Tally:
    """One version's counts over some span of time."""

    feeds: int = 0
    errors: int = 0
    impressions: int = 0  # items shown in the first ONLINE_K positions
    clicks_at_k: int = 0
    likes: int = 0
    skips: int = 0
    interactions: int = 0  # every attributed interaction, whatever its event
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=_LATENCIES))

    @property
    def ctr_at_k(self) -> float:
        return self.clicks_at_k / self.impressions if self.impressions else 0.0

    @property
    def p99_ms(self) -> float:
        return p50_p99(list(self.latencies_ms))[1] if self.latencies_ms else 0.0

    COUNTS = ("feeds", "errors", "impressions", "clicks_at_k", "likes", "skips", "interactions")

    def to_row(self, version: str) -> CountRow:
        """What a replica publishes to the store for this tally (catalog/online_rows.py)."""
        return (version, {name: int(getattr(self, name)) for name in self.COUNTS},
                np.asarray(self.latencies_ms, "<f4").tobytes())

    def to_proto(self) -> gateway_pb2.OnlineMetrics:
        return gateway_pb2.OnlineMetrics(
            feeds=self.feeds, errors=self.errors, impressions=self.impressions, clicks_at_k=self.clicks_at_k,
            k=ONLINE_K, likes=self.likes, skips=self.skips, ctr_at_k=self.ctr_at_k,
            likes_per_feed=self.likes / self.feeds if self.feeds else 0.0, p99_ms=self.p99_ms)


def summed(rows: list[tuple[str, CountRow]]) -> dict[str, Tally]:
    """Per version, the counts of every replica's rows added up and their recent latencies pooled."""
    out: dict[str, Tally] = {}
    for _, (version, counts, latencies) in rows:
        tally = out.get(version)
        if tally is None:
            tally = out[version] = Tally(latencies_ms=deque())  # pooled: every replica's recent latencies
        for name in Tally.COUNTS:
            setattr(tally, name, getattr(tally, name) + int(counts.get(name, 0)))
        tally.latencies_ms.extend(np.frombuffer(latencies, "<f4").tolist())
    return out


class PropensityLog:
    """Appends one JSON line per served feed (request id, user, version, each item's id, position and score) and
    per attributed interaction, from a writer thread: the response path only queues."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.SimpleQueue[dict | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="propensity-log", daemon=True)
        self._thread.start()

    def append(self, record: dict) -> None:
        self._queue.put(record)

    def flush(self) -> None:
        """Wait until every record queued so far is written (tests, shutdown)."""
        done = threading.Event()
        self._queue.put({"_flush": done})
        done.wait()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _write(self) -> None:
        with open(self.path, "a", buffering=1 << 16) as out:
            while True:
                record = self._queue.get()
                if record is None:
                    out.flush()
                    return
                if "_flush" in record:
                    out.flush()
                    record["_flush"].set()
                    continue
                out.write(json.dumps(record, separators=(",", ":")) + "\n")


class OnlineMetrics:
    """Per version: `totals` since the gateway started, and `trial`, since the current canary began (what the
    guardrails compare). A feed is remembered by its request id so that interactions naming it can be attributed."""

    def __init__(self, log: PropensityLog | None = None) -> None:
        self.log = log
        self.totals: dict[str, Tally] = {}
        self.trial: dict[str, Tally] = {}
        # (tenant, user, feed id) -> version, ids, positions: an interaction counts only for the tenant and user
        # the feed was served to
        self.feeds: LruCache[tuple[str, int, str], tuple[str, np.ndarray, np.ndarray]] = LruCache(_RECENT_FEEDS)
        self.unattributed = 0

    def start_trial(self) -> None:
        """A new canary: the comparison starts from nothing on both sides."""
        self.trial = {}

    def _tallies(self, version: str) -> tuple[Tally, Tally]:
        total = self.totals.get(version)
        if total is None:
            total = self.totals[version] = Tally()
        trial = self.trial.get(version)
        if trial is None:
            trial = self.trial[version] = Tally()
        return total, trial

    def served(self, response: gateway_pb2.FeedResponse, user_id: int, tenant: str, latency_ms: float,
               ranked: bool) -> None:
        """A feed answered: logged; counted toward its version and remembered for attribution unless degraded (a
        stale cached or fallback feed stands in for a ranking: it would blur the comparison of versions); `ranked` feeds
        (not from the cache) also count toward the version's latency."""
        version = response.model_version
        if not version or not len(response.items):
            return
        if self.log is not None:
            self.log.append({"type": "feed", "request_id": response.request_id, "at": round(time.time(), 3),
                             "user": user_id, "tenant": tenant, "version": version, "cached": response.cached,
                             "degraded": response.degraded,
                             "items": [[item.item_id, item.position, round(item.score, 6)] for item in response.items]})
        if response.degraded:
            return
        shown = min(ONLINE_K, sum(1 for item in response.items if item.position < ONLINE_K))
        for tally in self._tallies(version):
            tally.feeds += 1
            tally.impressions += shown
            if ranked:
                tally.latencies_ms.append(latency_ms)
        self.feeds.put((tenant, user_id, response.request_id), (version, np.array([item.item_id for item in response.items], np.int64),
                                             np.array([item.position for item in response.items], np.int32)))

    def failed(self, version: str) -> None:
        """A feed routed to `version` that it could not answer."""
        for tally in self._tallies(version):
            tally.errors += 1

    def interacted(self, feed_request_id: str, request_id: str, item_id: int, event: int, tenant: str = "",
                   user_id: int = 0) -> str | None:
        """Attribute an interaction to the version whose feed showed the item; returns that version (None: the feed
        is unknown or expired, was served to another tenant or user, or did not show the item)."""
        feed = self.feeds.get((tenant, user_id, feed_request_id))
        if feed is None:
            self.unattributed += 1
            return None
        version, ids, positions = feed
        shown = np.flatnonzero(ids == item_id)
        if not len(shown):
            self.unattributed += 1
            return None
        position = int(positions[shown[0]])
        for tally in self._tallies(version):
            tally.interactions += 1
            if event in _CLICKS and position < ONLINE_K:
                tally.clicks_at_k += 1
            if event == common_pb2.EVENT_TYPE_LIKE:
                tally.likes += 1
            if event == common_pb2.EVENT_TYPE_SKIP:
                tally.skips += 1
        if self.log is not None:
            self.log.append({"type": "interaction", "request_id": request_id, "feed_request_id": feed_request_id,
                             "at": round(time.time(), 3), "item": item_id, "event": int(event), "position": position,
                             "version": version})
        return version


class OnlineMetricsCollector:
    """Prometheus: each version's online counts and rates."""

    def __init__(self, metrics: OnlineMetrics) -> None:
        self.metrics = metrics

    def collect(self):
        counters = {name: CounterMetricFamily(f"feedserve_online_{name}", text, labels=["version"]) for name, text in (
            ("feeds", "feeds answered, by the model version that answered"),
            ("errors", "feeds routed to the version that failed"),
            ("impressions", f"items shown in the first {ONLINE_K} positions"),
            ("clicks_at_k", f"clicks (and stronger positives) on items in the first {ONLINE_K} positions"),
            ("likes", "likes attributed to the version's feeds"),
            ("skips", "skips attributed to the version's feeds"))}
        ctr = GaugeMetricFamily("feedserve_online_ctr_at_k", f"click-through in the first {ONLINE_K} positions",
                                labels=["version"])
        p99 = GaugeMetricFamily("feedserve_online_p99_seconds", "P99 of ranked feeds (recent)", labels=["version"])
        for version, tally in list(self.metrics.totals.items()):
            for name, family in counters.items():
                family.add_metric([version], getattr(tally, name))
            ctr.add_metric([version], tally.ctr_at_k)
            p99.add_metric([version], tally.p99_ms / 1e3)
        yield from counters.values()
        yield ctr
        yield p99
