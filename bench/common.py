"""Helpers shared by the benchmarks: percentiles, the machine line, and the JSON record."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mesh.percentiles import p50_p99

__all__ = ["p50_p99", "percentiles_us", "machine", "prepare_catalog", "record", "result_line", "ensure_debian_tool", "open_loop",
           "fault_windows"]

RESULTS = Path(__file__).resolve().parent / "results"


def percentiles_us(samples_ns: list[int]) -> tuple[float, float]:
    """P50 and P99 in microseconds."""
    return p50_p99(np.asarray(samples_ns, dtype=np.float64) / 1e3)


def machine() -> str:
    """`nproc`, the CPU model and the vector flags that decide kernel speed, as BENCHMARKS.md records them."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return f"{os.cpu_count()} cores, {model}, flags {' '.join(shown) or 'none of avx2/avx512'}"


def prepare_catalog(home: Path, items: int, users: int, interactions: int) -> str:
    """A catalog store under `home` with the simulator's data imported, encoded and a model trained (once: cached),
    by the same first-run path `feedserve up` takes. Returns the store's path."""
    store = home / "catalog.db"
    if not (home / "models" / "ranker-mlp").exists() or not store.exists():
        print(f"preparing a catalog in {home} ({items:,} items, {users:,} users, {interactions:,} interactions)...",
              flush=True)
        from cli.stack import free_ports

        ports = [str(p) for p in free_ports(4)]
        subprocess.run([sys.executable, "-m", "cli", "up", "--home", str(home), "--items", str(items), "--users",
                        str(users), "--interactions", str(interactions), "--prepare-only", "--no-generator",
                        "--gateway-port", ports[0], "--paramserver-port", ports[1], "--ranker-port", ports[2],
                        "--generator-port", ports[3]],
                       check=True, env={**os.environ, "FEEDSERVE_TRANSPORT": "grpc"})
    return str(store)


def process_cpu_s(pids: list[int]) -> float:
    """User and system CPU of these processes (all their threads) so far, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def record(name: str, result: Mapping[str, object]) -> Path:
    """Write bench/results/<name>.json with the machine and the date."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "date": time.strftime("%Y-%m-%d"), **result}, indent=1))
    return path


def result_line(result: Mapping[str, object]) -> str:
    return "RESULT " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())


def ensure_debian_tool(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` with apt-get first if it is missing."""
    path = shutil.which(binary)
    if path:
        return path
    print(f"{binary} not found: installing Debian's {package} (apt-get)...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", package]):
        if subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit(f"could not install {package} ({' '.join(command)} failed); install it and rerun")
    return shutil.which(binary) or f"/usr/bin/{binary}"


async def open_loop(rate: float, stop, send) -> None:
    """Call `send(due)` (a coroutine function) `rate` times a second until `stop` is set, on a schedule that does not
    drift with the calls (open loop: latency counts from each call's due time); then wait for those still running."""
    start, n, tasks = time.monotonic(), 0, set()
    while not stop.is_set():
        due = start + n / rate
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())  # the open loop's schedule
        task = asyncio.ensure_future(send(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.wait(tasks, timeout=5)


def fault_windows(windows, feeds) -> tuple[list[tuple], int, int]:
    """Per fault window (name, start, end), over the feeds (due, done, outcome) due in it: (name, sent, answered,
    degraded, recovery s from the kill to the last feed that was not full, full P50 ms, full P99 ms), printed as a
    table; with the answered and sent totals."""
    rows, answered_total, sent_total = [], 0, 0
    for name, start, end in windows:
        inside = [(due, done, outcome) for due, done, outcome in feeds if start <= due < end]
        answered = sum(1 for _, _, o in inside if o in ("full", "degraded"))
        not_full = [done for _, done, o in inside if o != "full"]
        latencies = [(done - due) * 1e3 for due, done, o in inside if o == "full"]
        p50, p99 = p50_p99(latencies) if latencies else (float("nan"), float("nan"))
        rows.append((name, len(inside), answered, sum(1 for _, _, o in inside if o == "degraded"),
                     max(not_full) - start if not_full else 0.0, p50, p99))
        answered_total, sent_total = answered_total + answered, sent_total + len(inside)
    print(f"{'fault':<18} {'feeds':>6} {'answered':>9} {'degraded':>9} {'recovery s':>11} {'full P50 ms':>12} {'full P99 ms':>12}")
    for name, sent, answered, degraded, recovery, p50, p99 in rows:
        print(f"{name:<18} {sent:>6} {answered:>9} {degraded:>9} {recovery:>11.2f} {p50:>12.1f} {p99:>12.1f}")
    return rows, answered_total, sent_total

