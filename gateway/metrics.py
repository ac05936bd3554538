"""Prometheus metrics of the gateway read at scrape time: degradations, cache, mode, queue depth, shedding, cost."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """A collector over the gateway service's own state (hops are observed by gateway.dashboard)."""

    def __init__(self, service) -> None:
        self.service = service

    def collect(self):
        service = self.service
        degraded = CounterMetricFamily("feedserve_degraded", "feeds answered degraded", labels=["reason"])
        for reason, count in service.counters["degraded"].items():
            degraded.add_metric([reason], count)
        yield degraded
        yield CounterMetricFamily("feedserve_shed", "feeds refused with RESOURCE_EXHAUSTED", value=service.counters["shed"])
        yield CounterMetricFamily("feedserve_cache_hits", "feeds answered from the cache", value=service.cache.hits)
        yield CounterMetricFamily("feedserve_cache_misses", "feeds not in the cache", value=service.cache.misses)
        yield CounterMetricFamily("feedserve_answer_cache_hits", "Generate repeats answered at the edge",
                                  value=service.answers.hits)
        yield GaugeMetricFamily("feedserve_mode", "burst mode: 1 normal, 2 surge, 3 emergency", value=service.modes.current)
        yield GaugeMetricFamily("feedserve_in_flight", "feeds being served (queue depth)", value=service.modes.in_flight)
        cost = CounterMetricFamily("feedserve_cost", "priced CPU of feeds, by feature tag", labels=["feature_tag"])
        alerts = CounterMetricFamily("feedserve_cost_alerts", "cost-per-1k threshold crossings", labels=["feature_tag"])
        for tag, total in service.ledger.totals.items():
            cost.add_metric([tag], total)
            alerts.add_metric([tag], service.ledger.alerts.get(tag, 0))
        yield cost
        yield alerts
        breakers = GaugeMetricFamily("feedserve_circuit_open", "1 while a dependency's circuit is open", labels=["dependency"])
        for name, breaker in service.breakers.items():
            breakers.add_metric([name], float(breaker.state != "closed"))
        yield breakers

