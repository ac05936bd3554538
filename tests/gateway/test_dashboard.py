"""The live dashboard, rendered by a real headless Chromium: per-hop latency, throughput, mode, cache, cost."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from feedserve.v1 import gateway_pb2
from gateway.dashboard import Dashboard
from gateway.metrics import GatewayMetrics
from tests.stack import running_stack


def _chromium() -> str:
    """Debian's chromium; installed on first use where this machine lets us (the Makefile's test target does)."""
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("the dashboard test needs Debian's chromium package (make test installs it; apt-get install chromium)")
    return found


def _render(chromium: str, url: str, scratch: Path, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={scratch / 'chromium'}", "--window-size=1100,700", "--virtual-time-budget=4000",
         *mode, url],
        capture_output=True, text=True, timeout=120)


def test_dashboard_renders_live_figures_in_headless_chromium(catalog, manifest, tmp_path, run) -> None:
    chromium = _chromium()

    async def body() -> None:
        async with running_stack(catalog, manifest, tmp_path) as stack:
            dashboard = Dashboard(stack.service)
            stack.service.on_answer = dashboard.observe
            port = dashboard.serve("127.0.0.1", 0, GatewayMetrics(stack.service))
            for user in (1, 2, 3, 1):
                await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=user), timeout=10)
            url = f"http://127.0.0.1:{port}/dashboard"
            stats = json.loads(urllib.request.urlopen(url + ".json", timeout=5).read())
            assert stats["mode"] == "normal" and stats["cache_hit_rate"] == 0.25
            assert {h["hop"] for h in stats["hops"]} >= {"ranker/model", "gateway/handle", "paramserver/lookup"}
            loop = asyncio.get_running_loop()
            dom = await loop.run_in_executor(None, lambda: _render(chromium, url, tmp_path, "--dump-dom"))
            assert dom.returncode == 0, dom.stderr[-2000:]
            assert "ranker/model" in dom.stdout and "mode-normal" in dom.stdout and "25.0 %" in dom.stdout
            shot = tmp_path / "dashboard.png"
            rendered = await loop.run_in_executor(None, lambda: _render(chromium, url, tmp_path, f"--screenshot={shot}"))
            assert rendered.returncode == 0 and shot.stat().st_size > 10_000

    run(body())
