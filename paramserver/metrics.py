"""Prometheus metrics of a paramserver: rows, bytes, hits and misses per table, and WAL lag."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from feedserve.v1 import common_pb2
from mesh.metrics import serve_metrics as _serve

__all__ = ["serve_metrics"]

_NAMES = {1: "user", 2: "item"}


class _Collector:
    """Reads the core at scrape time: nothing to keep in step on the hot path."""

    def __init__(self, core) -> None:
        self.core = core

    def collect(self):
        rows = GaugeMetricFamily("feedserve_paramserver_rows", "keys stored", labels=["table"])
        size = GaugeMetricFamily("feedserve_paramserver_bytes", "bytes held by the table", labels=["table"])
        hits = CounterMetricFamily("feedserve_paramserver_hits", "lookup keys found", labels=["table"])
        misses = CounterMetricFamily("feedserve_paramserver_misses", "lookup keys missing", labels=["table"])
        for table_id, table in self.core.tables.items():
            name = _NAMES[table_id]
            rows.add_metric([name], table.size)
            size.add_metric([name], table.bytes)
            hits.add_metric([name], self.core.stats[table_id]["hits"])
            misses.add_metric([name], self.core.stats[table_id]["misses"])
        lag_bytes, lag_seconds = self.core.wal.lag()
        yield from (rows, size, hits, misses)
        yield GaugeMetricFamily("feedserve_paramserver_wal_lag_bytes", "WAL bytes written, not yet fsynced", value=lag_bytes)
        yield GaugeMetricFamily("feedserve_paramserver_wal_lag_seconds", "seconds since the last WAL fsync", value=lag_seconds)
        held = CounterMetricFamily("feedserve_paramserver_drift_held_back", "vector moves a guardrail held back",
                                   labels=["guardrail"])
        for verdict, name in ((common_pb2.GUARDRAIL_RATE, "rate"), (common_pb2.GUARDRAIL_TRAVEL, "travel")):
            held.add_metric([name], self.core.guardrails.held[verdict])
        yield held
        yield GaugeMetricFamily("feedserve_paramserver_wal_seq", "sequence number of the last WAL record", value=self.core.wal.last_seq)


def serve_metrics(core, host: str, port: int) -> int:
    """Serve /metrics on host:port (0 picks a free port); returns the port."""
    return _serve(host, port, _Collector(core))
