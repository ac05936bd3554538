"""The first five minutes: `feedserve up` from an empty HOME on the default world, as a new user runs it.

    python bench/firstrun.py [--quick] [--keep-home DIR]

The real `feedserve up` runs as a child process (every service, the generator included) with its output piped, as
it is under `make run` in a log. The benchmark measures:
- first_feed_s: from the start of `feedserve up` (the install is done) to the first full feed (not degraded, not
  the cold-start feed) for a known user through the gateway;
- silent_max_s: the longest stretch with no output line before that feed (a progress bar off a terminal writes a
  line at least every 5 s);
- personalised_share: the share of feed items that the interest or cluster source proposed, over 100 random users'
  feeds (a degraded or failed feed counts as none personalised);
- world_ndcg20 against popularity: the first-run recipe (one ALS setting, one ranker epoch) trained on the training
  part of the default world's per-user split and served by the real Ranker, after the stack is stopped (not timed).

--quick uses a smaller world (20,000 items, 5,000 users, 100,000 interactions) and says so; its first_feed_s is not
the target's. Ends with one `RESULT` line; the record goes to bench/results/firstrun.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from bench.common import machine, record, result_line  # noqa: E402
from world import WorldSpec  # noqa: E402

QUICK_WORLD = WorldSpec(items=20_000, users=5_000, interactions=100_000)
PERSONAL = {"interest", "cluster"}
FEED_USERS = 100
UP_TIMEOUT_S = 1_800


class Output:
    """`feedserve up`'s merged output, line by line, with when each line came and the longest gap between lines."""

    def __init__(self, process: subprocess.Popen, start: float, echo: bool) -> None:
        self.process, self.start, self.echo = process, start, echo
        self.lines: list[tuple[float, str]] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True, name="up-output")
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            at = time.monotonic() - self.start
            if self.echo:
                print(f"  {at:7.1f}s | {line.rstrip()}", flush=True)
            with self.changed:
                self.lines.append((at, line.rstrip("\n")))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> float:
        """When a line containing `text` came (seconds since the start); raises if `up` exits or times out first."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, line in self.lines:
                    if text in line:
                        return at
                if self.process.poll() is not None and not self.reader.is_alive():
                    tail = "\n".join(line for _, line in self.lines[-20:])
                    raise SystemExit(f"feedserve up exited with {self.process.returncode} before '{text}':\n{tail}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"no '{text}' from feedserve up within {timeout:.0f} s")
                self.changed.wait(min(left, 1.0))

    def silent_max(self, until: float) -> tuple[float, str]:
        """The longest stretch with no line, up to `until` seconds, and the line that ended it."""
        stamps = [(0.0, "(start)")] + [(at, line) for at, line in self.lines if at <= until] + [(until, "(first feed)")]
        gap, after = max(((b[0] - a[0], b[1]) for a, b in zip(stamps, stamps[1:])), default=(0.0, ""))
        return gap, after


def first_full_feed(stub, user: int, start: float, timeout: float) -> float:
    """Seconds since the start when a full, personalised (not cold-start) feed for `user` first answers."""
    from feedserve.v1 import gateway_pb2

    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = stub.Feed(gateway_pb2.FeedRequest(user_id=user, k=20), timeout=10)
            if reply.items and not reply.degraded and not reply.cold_start:
                return time.monotonic() - start
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        if time.monotonic() > deadline:
            raise SystemExit(f"no full feed for user {user} within {timeout:.0f} s of the gateway's start")


def personalised_share(stub, users: list[int]) -> tuple[float, int]:
    """The share of feed items from the interest or cluster source over these users' feeds, and how many feeds were
    degraded or failed (their items count as none personalised)."""
    from feedserve.v1 import gateway_pb2

    personal = shown = degraded = 0
    for user in users:
        try:
            reply = stub.Feed(gateway_pb2.FeedRequest(user_id=user, k=20), timeout=10)
        except grpc.RpcError:
            degraded, shown = degraded + 1, shown + 20
            continue
        if reply.degraded:
            degraded, shown = degraded + 1, shown + max(len(reply.items), 20)
            continue
        shown += len(reply.items)
        personal += sum(1 for item in reply.items if PERSONAL & set(item.sources))
    return personal / max(shown, 1), degraded


def stop(process: subprocess.Popen) -> int:
    """SIGTERM to `feedserve up`'s group (as a terminal's Ctrl-C reaches it), waited for."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def world_quality(home: Path, spec: WorldSpec) -> dict[str, float]:
    """The first-run recipe's NDCG@20 on the world's per-user split, against popularity, through the real Ranker."""
    from catalog import open_store
    from cli.bootstrap import FIRST_RUN_ALS, load_schema_arg
    from engines.sentence import DIM
    from learning.evaluation import evaluate_against_popularity

    store = open_store(home / "catalog.db")
    try:
        return evaluate_against_popularity(store, load_schema_arg("simulator"), DIM, [FIRST_RUN_ALS], epochs=1,
                                           stream=sys.stderr)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"a smaller world ({QUICK_WORLD.items:,} items, {QUICK_WORLD.users:,} users): not the target's")
    parser.add_argument("--keep-home", type=Path, help="use this (empty or new) directory as HOME and keep it")
    parser.add_argument("--quiet", action="store_true", help="do not echo feedserve up's output")
    args = parser.parse_args()
    spec = QUICK_WORLD if args.quick else WorldSpec()
    from cli.access import admin_key_path, gateway_channel, stack_tls
    from cli.stack import free_ports
    from feedserve.v1 import gateway_pb2_grpc
    from mesh.security import configure

    home = args.keep_home or Path(tempfile.mkdtemp(prefix="feedserve-firstrun-"))
    if home.exists() and any(home.iterdir()):
        raise SystemExit(f"{home} is not empty: the first run needs an empty HOME")
    home.mkdir(parents=True, exist_ok=True)
    world = f"{spec.items:,} items, {spec.users:,} users, {spec.interactions:,} interactions"
    print(f"firstrun: `feedserve up` from an empty HOME ({home}) on {'a SMALLER world (--quick)' if args.quick else 'the default world'}"
          f" ({world}); {machine()}", flush=True)
    ports = [str(p) for p in free_ports(4)]
    command = [sys.executable, "-m", "cli", "up", "--home", str(home), "--items", str(spec.items), "--users",
               str(spec.users), "--interactions", str(spec.interactions), "--gateway-port", ports[0],
               "--paramserver-port", ports[1], "--ranker-port", ports[2], "--generator-port", ports[3]]
    env = {**os.environ, "FEEDSERVE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True, cwd=Path(__file__).resolve().parent.parent)
    output = Output(process, start, echo=not args.quiet)
    try:
        listening_s = output.wait_for("gateway listening on", UP_TIMEOUT_S)
        configure(stack_tls(home))
        key = admin_key_path(home).read_text().strip()
        with gateway_channel(f"127.0.0.1:{ports[0]}", key) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            first_feed_s = first_full_feed(stub, 1, start, 120)
            silent_s, after = output.silent_max(first_feed_s)
            users = random.Random(0).sample(range(1, spec.users + 1), FEED_USERS)
            share, degraded = personalised_share(stub, users)
    finally:
        code = stop(process)
    print(f"\n  gateway listening after {listening_s:.1f} s; first full feed after {first_feed_s:.1f} s", flush=True)
    print(f"  longest silence {silent_s:.1f} s (ended by: {after.strip()[:100]})", flush=True)
    print(f"  personalised share over {FEED_USERS} users' feeds: {share:.3f} ({degraded} degraded or failed)", flush=True)
    print(f"  feedserve up stopped with exit code {code}", flush=True)
    print("\nworld quality: the first-run recipe on the world's per-user split (not timed)...", flush=True)
    quality = world_quality(home, spec)
    print(f"  NDCG@20 served {quality['ndcg20']:.4f}, popularity {quality['ndcg20_popularity']:.4f} "
          f"({quality['test_users']:.0f} test users)", flush=True)
    result = {"first_feed_s": round(first_feed_s, 1), "silent_max_s": round(silent_s, 1),
              "world_ndcg20": f"{quality['ndcg20']:.4f}", "world_ndcg20_popularity": f"{quality['ndcg20_popularity']:.4f}",
              "world_ratio_vs_popularity": quality["ratio_vs_popularity"], "personalised_share": share,
              "degraded_feeds": degraded, "gateway_listening_s": round(listening_s, 1), "quick": int(args.quick)}
    record("firstrun", {**result, "world": world})
    if args.keep_home is None:
        shutil.rmtree(home, ignore_errors=True)
    print(result_line(result))


if __name__ == "__main__":
    main()
