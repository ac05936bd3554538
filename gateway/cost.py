"""Cost accounting: each request's CPU seconds, priced, summed per feature tag over a sliding window."""

from __future__ import annotations

import time
from collections import defaultdict

from feedserve.v1 import gateway_pb2
from mesh.logging import get_logger
from mesh.tags import MAX_TAGS, TagBook

__all__ = ["CostLedger", "request_cpu_seconds", "MAX_WINDOW_S"]

MAX_WINDOW_S = 3_600
ALERT_WINDOW_S = 60  # the alert watches the last minute


def request_cpu_seconds(response: gateway_pb2.FeedResponse) -> float:
    """The gateway's own handling plus every downstream stage; the gateway's call stages are inside its
    handling already, so they are not counted twice."""
    total = 0
    for hop in response.hops:
        if hop.service == "gateway":
            total += hop.cpu_ns if hop.stage == "handle" else 0
        else:
            total += hop.cpu_ns
    return total / 1e9


class CostLedger:
    """Per-second buckets per feature tag for the last hour (requests, CPU seconds, token cost, tokens); a tag
    whose cost per 1,000 requests over the last minute crosses `alert_per_1k` is logged and counted once per
    crossing. At most `max_tags` distinct tags are kept; later new ones are booked as "other"."""

    def __init__(self, cpu_second_price: float = 0.0000125, alert_per_1k: float = 0.0, max_tags: int = MAX_TAGS) -> None:
        self.cpu_second_price, self.alert_per_1k = cpu_second_price, alert_per_1k
        self._tags = TagBook(max_tags)
        self._buckets: dict[str, dict[int, list[float]]] = defaultdict(dict)  # tag -> second -> [requests, cpu, token cost, tokens]
        self.alerts: dict[str, int] = defaultdict(int)
        self._alerting: set[str] = set()
        self.totals: dict[str, float] = defaultdict(float)
        self._log = get_logger("cost")

    def record(self, tag: str, cpu_seconds: float, token_cost: float = 0.0, tokens: int = 0) -> float:
        """Book one request (a feed, or a generation with its priced tokens); returns its cost."""
        tag = self._tags.book(tag)
        second = int(time.time())
        bucket = self._buckets[tag].setdefault(second, [0, 0.0, 0.0, 0])
        bucket[0] += 1
        bucket[1] += cpu_seconds
        bucket[2] += token_cost
        bucket[3] += tokens
        cost = cpu_seconds * self.cpu_second_price + token_cost
        self.totals[tag] += cost
        if len(self._buckets[tag]) > MAX_WINDOW_S:  # forget what no window can ask for
            for old in [s for s in self._buckets[tag] if s < second - MAX_WINDOW_S]:
                del self._buckets[tag][old]
        if self.alert_per_1k > 0:
            self._check(tag)
        return cost

    def _window(self, tag: str, window_s: int) -> tuple[int, float, float, int]:
        """Requests, CPU seconds, token cost and tokens of `tag` over the last `window_s` seconds."""
        since = int(time.time()) - window_s
        totals = [0, 0.0, 0.0, 0]
        for second, bucket in self._buckets[tag].items():
            if second > since:
                totals = [t + b for t, b in zip(totals, bucket)]
        return int(totals[0]), totals[1], totals[2], int(totals[3])

    def _check(self, tag: str) -> None:
        requests, cpu, token_cost, _ = self._window(tag, ALERT_WINDOW_S)
        per_1k = (cpu * self.cpu_second_price + token_cost) * 1000 / max(requests, 1)
        if per_1k > self.alert_per_1k and tag not in self._alerting:
            self._alerting.add(tag)
            self.alerts[tag] += 1
            self._log.warning("cost alert", feature_tag=tag, cost_per_1k=per_1k, threshold=self.alert_per_1k)
        elif per_1k <= self.alert_per_1k:
            self._alerting.discard(tag)

    def report(self, window_s: int) -> gateway_pb2.CostReport:
        report = gateway_pb2.CostReport(window_s=window_s, cpu_second_price=self.cpu_second_price,
                                        alert_per_1k=self.alert_per_1k)
        for tag in sorted(self._buckets):
            requests, cpu, token_cost, tokens = self._window(tag, window_s)
            if requests:
                cost = cpu * self.cpu_second_price + token_cost
                report.features.append(gateway_pb2.FeatureCost(
                    feature_tag=tag, requests=requests, cpu_seconds=cpu, cost=cost,
                    cost_per_1k=cost * 1000 / requests, alerts=self.alerts[tag], tokens=tokens))
        return report
