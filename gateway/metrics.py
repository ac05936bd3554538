"""Prometheus metrics of the gateway: per-hop latency, degradations, cache, mode, queue depth, shedding."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from feedserve.v1 import gateway_pb2

__all__ = ["GatewayMetrics"]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GatewayMetrics:
    """Histograms observed as feeds are answered; everything else read from the service at scrape time."""

    def __init__(self, service) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.hops = Histogram("feedserve_hop_seconds", "time each service spent per stage", ["service", "stage"],
                              buckets=_BUCKETS, registry=self.registry)
        self.registry.register(self)

    def observe(self, response: gateway_pb2.FeedResponse) -> None:
        for hop in response.hops:
            self.hops.labels(hop.service, hop.stage).observe((hop.end_ns - hop.start_ns) / 1e9)

    def collect(self):
        service = self.service
        degraded = CounterMetricFamily("feedserve_degraded", "feeds answered degraded", labels=["reason"])
        for reason, count in service.counters["degraded"].items():
            degraded.add_metric([reason], count)
        yield degraded
        yield CounterMetricFamily("feedserve_shed", "feeds refused with RESOURCE_EXHAUSTED", value=service.counters["shed"])
        yield CounterMetricFamily("feedserve_cache_hits", "feeds answered from the cache", value=service.cache.hits)
        yield CounterMetricFamily("feedserve_cache_misses", "feeds not in the cache", value=service.cache.misses)
        yield GaugeMetricFamily("feedserve_mode", "burst mode: 1 normal, 2 surge, 3 emergency", value=service.modes.current)
        yield GaugeMetricFamily("feedserve_in_flight", "feeds being served (queue depth)", value=service.modes.in_flight)
        breakers = GaugeMetricFamily("feedserve_circuit_open", "1 while a dependency's circuit is open", labels=["dependency"])
        for name, breaker in service.breakers.items():
            breakers.add_metric([name], float(breaker.state != "closed"))
        yield breakers

    def serve(self, host: str, port: int) -> int:
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port
