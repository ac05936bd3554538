"""The process's Prometheus registry: RPC latency and status for every service, served on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.registry import Collector

__all__ = ["REGISTRY", "RPC_SECONDS", "RPC_TOTAL", "HOP_SECONDS", "register", "serve_metrics"]

REGISTRY = CollectorRegistry()
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RPC_SECONDS = Histogram("feedserve_request_seconds", "server-side latency of each RPC", ["method"],
                        buckets=BUCKETS, registry=REGISTRY)
RPC_TOTAL = Counter("feedserve_requests", "RPCs answered, by status", ["method", "status"], registry=REGISTRY)
HOP_SECONDS = Histogram("feedserve_hop_seconds", "time each service spent per stage", ["service", "stage"],
                        buckets=BUCKETS, registry=REGISTRY)


_collectors: dict[type, Collector] = {}


def register(collector: Collector) -> None:
    """Add a collector; it replaces an earlier one of the same type (one service core per process)."""
    old = _collectors.pop(type(collector), None)
    if old is not None:
        REGISTRY.unregister(old)
    REGISTRY.register(collector)
    _collectors[type(collector)] = collector


def serve_metrics(host: str, port: int, *collectors: Collector) -> int:
    """Serve /metrics on host:port (0 picks a free port) with extra collectors; returns the port."""
    for collector in collectors:
        register(collector)
    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    return server.server_port
