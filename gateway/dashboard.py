"""The gateway's HTTP side: /metrics for Prometheus, and a small live /dashboard for people."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feedserve.v1 import gateway_pb2
from mesh.metrics import HOP_SECONDS, REGISTRY, register
from mesh.percentiles import p50_p99

__all__ = ["Dashboard"]

_WINDOW = 2_000  # recent feeds kept for percentiles
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>feedserve gateway</title>
<style>
 body{font:14px system-ui,sans-serif;margin:24px;color:#1d2330;background:#f7f8fa}
 h1{font-size:20px;margin:0 0 16px} .tiles{display:flex;gap:12px;margin-bottom:18px;flex-wrap:wrap}
 .tile{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:12px 16px;min-width:150px}
 .tile b{display:block;font-size:22px;margin-top:4px} table{border-collapse:collapse;background:#fff}
 th,td{border:1px solid #dde1e8;padding:6px 12px;text-align:right} th:first-child,td:first-child{text-align:left}
 .mode-normal{color:#1a7f37} .mode-surge{color:#b26b00} .mode-emergency{color:#c21f32}
 .bar{background:#4c7cf3;height:10px;border-radius:3px}
</style></head>
<body><h1>feedserve gateway <small id="updated"></small></h1>
<div class="tiles">
 <div class="tile">mode<b id="mode">-</b></div>
 <div class="tile">throughput<b id="rps">-</b></div>
 <div class="tile">feed P50 / P99<b id="latency">-</b></div>
 <div class="tile">cache hit rate<b id="cache">-</b></div>
 <div class="tile">degraded<b id="degraded">-</b></div>
 <div class="tile">cost per 1,000 feeds<b id="cost">-</b></div>
</div>
<table id="hops"><thead><tr><th>hop</th><th>P50 ms</th><th>P99 ms</th><th>count</th><th></th></tr></thead><tbody></tbody></table>
<h2 style="font-size:16px;margin:18px 0 8px">model versions</h2>
<table id="models"><thead><tr><th>version</th><th>state</th><th>feeds</th><th>errors</th><th>CTR@10</th>
<th>likes / feed</th><th>skips</th><th>P99 ms</th><th>last change</th></tr></thead><tbody></tbody></table>
<script>
async function refresh(){
  const s = await (await fetch('dashboard.json')).json();
  const mode = document.getElementById('mode'); mode.textContent = s.mode; mode.className = 'mode-' + s.mode;
  document.getElementById('rps').textContent = s.rps.toFixed(1) + ' /s';
  document.getElementById('latency').textContent = s.feed_p50_ms.toFixed(2) + ' / ' + s.feed_p99_ms.toFixed(2) + ' ms';
  document.getElementById('cache').textContent = (100 * s.cache_hit_rate).toFixed(1) + ' %';
  document.getElementById('degraded').textContent = (100 * s.degraded_share).toFixed(1) + ' %';
  document.getElementById('cost').textContent = s.cost_per_1k.toPrecision(3);
  const body = document.querySelector('#hops tbody'); body.innerHTML = '';
  const top = Math.max(0.001, ...s.hops.map(h => h.p99_ms));
  for (const h of s.hops) {
    const row = body.insertRow();
    row.innerHTML = `<td>${h.hop}</td><td>${h.p50_ms.toFixed(3)}</td><td>${h.p99_ms.toFixed(3)}</td>` +
      `<td>${h.count}</td><td style="width:200px"><div class="bar" style="width:${100 * h.p99_ms / top}%"></div></td>`;
  }
  const models = document.querySelector('#models tbody'); models.innerHTML = '';
  for (const m of s.models) {
    const row = models.insertRow();
    row.innerHTML = `<td>${m.version}</td><td>${m.state}</td><td>${m.feeds}</td><td>${m.errors}</td>` +
      `<td>${m.ctr_at_k.toFixed(4)}</td><td>${m.likes_per_feed.toFixed(3)}</td><td>${m.skips}</td>` +
      `<td>${m.p99_ms.toFixed(1)}</td><td style="text-align:left">${m.last_change}</td>`;
  }
  document.getElementById('updated').textContent = 'at ' + new Date().toLocaleTimeString();
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


class Dashboard:
    """Keeps the recent feeds' hops and latencies; serves /metrics, /dashboard and /dashboard.json."""

    def __init__(self, service) -> None:
        self.service = service
        self.recent: deque[tuple[float, float, bool, dict[str, float]]] = deque(maxlen=_WINDOW)
        self._lock = threading.Lock()

    def observe(self, response: gateway_pb2.FeedResponse) -> None:
        """Called with every answered feed (GatewayService.on_answer)."""
        hops = {}
        for hop in response.hops:
            seconds = (hop.end_ns - hop.start_ns) / 1e9
            HOP_SECONDS.labels(hop.service, hop.stage).observe(seconds)
            hops[f"{hop.service}/{hop.stage}"] = seconds * 1e3
        with self._lock:
            self.recent.append((time.monotonic(), hops.get("gateway/handle", 0.0), response.degraded, hops))

    def stats(self) -> dict:
        with self._lock:
            recent = list(self.recent)
        now = time.monotonic()
        last10 = [r for r in recent if now - r[0] <= 10]
        handle = np.array([r[1] for r in recent]) if recent else np.zeros(1)
        per_hop: dict[str, list[float]] = {}
        for *_, hops in recent:
            for name, ms in hops.items():
                per_hop.setdefault(name, []).append(ms)
        cache = self.service.cache
        report = self.service.ledger.report(60)
        requests = sum(f.requests for f in report.features)
        return {
            "mode": gateway_pb2.Mode.Name(self.service.modes.current).removeprefix("MODE_").lower(),
            "in_flight": self.service.modes.in_flight,
            "rps": len(last10) / 10.0,
            "feed_p50_ms": p50_p99(handle)[0],
            "feed_p99_ms": p50_p99(handle)[1],
            "cache_hit_rate": cache.hits / max(cache.hits + cache.misses, 1),
            "degraded_share": sum(r[2] for r in recent) / max(len(recent), 1),
            "cost_per_1k": sum(f.cost for f in report.features) * 1000 / max(requests, 1),
            "models": self._models(),
            "hops": [{"hop": name, "p50_ms": p50_p99(v)[0], "p99_ms": p50_p99(v)[1],
                      "count": len(v)} for name, v in sorted(per_hop.items())],
        }

    def _models(self) -> list[dict]:
        """Each version the gateway has served or the routing names: its state, online figures and last change
        (an automatic rollback says which guardrail it breached)."""
        online, routing = self.service.online, self.service.routing
        family = routing.family if routing is not None else None
        rows = {}
        for key, tally in list(online.totals.items()):
            rows[key] = {"version": key, "state": "", "last_change": "", "feeds": tally.feeds, "errors": tally.errors,
                         "ctr_at_k": tally.ctr_at_k, "likes_per_feed": tally.likes / max(tally.feeds, 1),
                         "skips": tally.skips, "p99_ms": tally.p99_ms}
        if family is not None:
            for version in family.versions.values():
                key = f"{family.name}/{version.version}"
                row = rows.setdefault(key, {"version": key, "feeds": 0, "errors": 0, "ctr_at_k": 0.0,
                                            "likes_per_feed": 0.0, "skips": 0, "p99_ms": 0.0})
                row["state"], row["last_change"] = version.state, version.last_change
        return sorted(rows.values(), key=lambda r: r["version"])

    def serve(self, host: str, port: int, *collectors: object) -> int:
        """Start the HTTP server on a daemon thread; returns its port (0 picks one)."""
        for collector in collectors:
            register(collector)  # type: ignore[arg-type]  # prometheus collectors by duck type (describe/collect)
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
                elif path in ("/dashboard", "/dashboard/"):
                    self._send(200, "text/html; charset=utf-8", _PAGE.encode())
                elif path in ("/dashboard.json", "/dashboard/dashboard.json"):
                    self._send(200, "application/json", json.dumps(dashboard.stats()).encode())
                else:
                    self._send(404, "text/plain", b"not found: try /metrics or /dashboard\n")

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # scrapes every few seconds would flood the JSON log

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, name="dashboard", daemon=True).start()
        return server.server_address[1]
