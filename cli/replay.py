"""`feedserve replay EVENTS`: send a time-ordered window of held-back events through the public API and measure
how well the feed anticipated each positive one, with real-time drift and with frozen vectors, from the same start.

Before each positive event it asks for a Feed (k items, everything the user has seen left out); the event is a hit
when its item is in that feed. The frozen pass sends no interactions, so it leaves the stack as it found it; the
drift pass then sends each event through Interact after its Feed (the events are logged: they are real now).
Beside them, in this process and from the same snapshot: popularity, and a reference that applies the same drift
rule to the same vectors in plain numpy, with no ranker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc
import numpy as np

from catalog import ITEM, USER, Event, Schema, Store
from catalog.drift import DEFAULT_RATES, drift_step
from cli.access import gateway_channel
from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from learning.metrics import gain
from learning.training import POSITIVES, current_user_vectors, load_catalog
from mesh.progress import Progress

__all__ = ["Tally", "ReplayReport", "replay", "window"]

_POSITIVE = frozenset(POSITIVES["click"])


@dataclass
class Tally:
    """Hits and discounted gains over the positive events a method was asked about."""

    asked: int = 0
    hits: int = 0
    gain: float = 0.0
    degraded: int = 0  # feeds the gateway answered degraded: counted, and scored as they came

    def score(self, ranked: Sequence[int], item: int) -> None:
        self.asked += 1
        if item in ranked:
            self.hits += 1
            self.gain += gain(list(ranked).index(item))

    @property
    def hr(self) -> float:
        return self.hits / self.asked if self.asked else float("nan")

    @property
    def ndcg(self) -> float:
        return self.gain / self.asked if self.asked else float("nan")


@dataclass
class ReplayReport:
    tallies: dict[str, Tally] = field(default_factory=dict)
    events: int = 0
    held_back: int = 0
    new_users: int = 0
    seconds: float = 0.0

    def result(self, k: int) -> dict[str, float]:
        out = {}
        for name, tally in self.tallies.items():
            out[f"replay_hr{k}_{name}"] = tally.hr
            out[f"replay_ndcg{k}_{name}"] = tally.ndcg
        drift, frozen, reference = (self.tallies[n].hr for n in ("drift", "frozen", "reference"))
        out["drift_gain"] = drift / frozen if frozen else float("nan")
        out["ratio_vs_drift_reference"] = drift / reference if reference else float("nan")
        out["replay_held_back"] = float(self.held_back)
        return out


def window(events: Sequence[Event], positives: int) -> list[Event]:
    """The events in time order (stable) up to and including the `positives`-th positive one."""
    ordered = sorted(events, key=lambda e: e.timestamp)
    out, seen = [], 0
    for event in ordered:
        if seen >= positives:
            break
        out.append(event)
        seen += event.event in _POSITIVE
    return out


def _top(scores: np.ndarray, exclude: set[int], k: int) -> list[int]:
    """Best `k` item ids (1-based) of `scores` (row = id - 1), leaving out `exclude`."""
    scores = scores.copy()
    if exclude:
        scores[np.fromiter(exclude, np.int64, len(exclude)) - 1] = -np.inf
    top = np.argpartition(-scores, k - 1)[:k]
    return (top[np.argsort(-scores[top], kind="stable")] + 1).tolist()


def replay(store: Store, schema: Schema, gateway: str, events: Sequence[Event], k: int = 20,
           rates: Mapping[int, float] = DEFAULT_RATES, timeout_s: float = 10.0, stream: TextIO | None = None,
           dim: int = 384, api_key: str = "") -> ReplayReport:
    """Both API passes and both in-process baselines over `events` (already a time-ordered window)."""
    catalog = load_catalog(store, schema, dim)
    size = catalog.items.size
    item_ids = store.resolve(ITEM, [e.item for e in events])
    user_ids = store.resolve(USER, [e.user for e in events])
    if (item_ids == 0).any():
        first = int(np.flatnonzero(item_ids == 0)[0])
        raise ValueError(f"events[{first}].item: {events[first].item!r} is not in the catalog")
    ids, vectors = current_user_vectors(store, catalog)
    snapshot = {int(u): v for u, v in zip(ids.tolist(), vectors)}
    seen: dict[int, set[int]] = {}
    for user, item in zip(catalog.events["user"].tolist(), catalog.events["item"].tolist()):
        seen.setdefault(user, set()).add(item)
    positive = np.isin(catalog.events["event"], list(_POSITIVE))
    popularity = np.bincount(catalog.events["item"][positive] - 1, minlength=size).astype(np.float64)
    popularity[~catalog.items.servable[:size]] = -np.inf
    served = catalog.items.vectors[:size]
    unservable = ~catalog.items.servable[:size]
    report = ReplayReport(tallies={n: Tally() for n in ("drift", "frozen", "reference", "popularity")}, events=len(events))
    report.new_users = len({e.user for e, u in zip(events, user_ids.tolist()) if u == 0 or u not in snapshot})
    started = time.monotonic()

    # in-process: popularity and the numpy drift reference, from the same snapshot. A user the store does not know
    # yet is keyed by their external id (the API creates them on their first event, as this does).
    users: dict[int | str, np.ndarray] = {u: v.copy() for u, v in snapshot.items()}
    replayed: dict[str, set[int]] = {}
    for n, (event, item) in enumerate(zip(events, item_ids.tolist())):
        user = int(user_ids[n])
        key: int | str = user if user else event.user
        mine = replayed.setdefault(event.user, set())
        if event.event in _POSITIVE:
            excluded = seen.get(user, set()) | mine
            vector = users.get(key)
            if vector is not None:
                scores = served @ vector
                scores[unservable] = -np.inf
            else:
                scores = popularity  # the reference ranks a user with no vector yet by popularity
            report.tallies["reference"].score(_top(scores, excluded, k), item)
            report.tallies["popularity"].score(_top(popularity, excluded, k), item)
        mine.add(item)
        moved = drift_step(users.get(key), served[item - 1], float(rates.get(event.event, 0.0)))
        if moved is not None:
            users[key] = moved

    with gateway_channel(gateway, api_key) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for name in ("frozen", "drift"):
            tally, replayed = report.tallies[name], {}
            progress = Progress(f"replay with {'drift' if name == 'drift' else 'frozen vectors'} ({len(events):,} events)",
                                len(events), stream=stream) if stream is not None else None
            for event, item in zip(events, item_ids.tolist()):
                mine = replayed.setdefault(event.user, set())
                if event.event in _POSITIVE:
                    reply = stub.Feed(gateway_pb2.FeedRequest(user=event.user, k=k, exclude_ids=sorted(mine)),
                                      timeout=timeout_s)
                    tally.degraded += reply.degraded
                    tally.score([i.item_id for i in reply.items], item)
                if name == "drift":
                    request = gateway_pb2.InteractRequest(
                        user=event.user, item=event.item, event=event.event,  # type: ignore[arg-type]  # protoc stubs: enum fields as classes
                        timestamp=event.timestamp, value=None if math.isnan(event.value) else event.value)
                    ack = stub.Interact(request, timeout=timeout_s)
                    report.held_back += ack.held_back != common_pb2.GUARDRAIL_NONE
                mine.add(item)
                if progress is not None:
                    progress.advance()
    report.seconds = time.monotonic() - started
    return report


def read_events(path: Path, mapping: Mapping[str, str], schema: Schema) -> list[Event]:
    """A file of events (CSV, TSV, JSONL or Parquet; columns named as `feedserve import --events` reads them)."""
    from catalog.importers import BadRow, plan_for, read_section

    plan = plan_for(None, None, {"events": path}, mapping, schema)
    out: list[Event] = []
    for line, record in read_section(plan.sections[0]):
        if isinstance(record, BadRow):
            raise ValueError(f"{path}:{line}: {record.reason}")
        out.append(record)  # type: ignore[arg-type]
    return out


def command(args) -> int:
    """`feedserve replay`: read, window, replay, print the table and the RESULT figures."""
    import sys

    from catalog import open_store
    from catalog.drift import parse_rates
    from cli.bootstrap import load_schema_arg

    schema = load_schema_arg(args.schema or "simulator")
    try:
        events = window(read_events(args.events, dict(p.split("=", 1) for p in args.map), schema), args.positives)
        rates = parse_rates(args.drift_rates)
        store = open_store(args.store or args.home / "catalog.db")
        report = replay(store, schema, args.gateway, events, args.k, rates, args.timeout, stream=sys.stderr, api_key=args.key)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"error: gateway {args.gateway}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(table(report, args.k))
    return 0


def table(report: ReplayReport, k: int) -> str:
    lines = [f"replay of {report.events:,} events ({report.tallies['drift'].asked:,} positive; "
             f"{report.new_users:,} users new to the catalog) in {report.seconds:.0f} s",
             f"{'method':<28} {'HR@' + str(k):>8} {'NDCG@' + str(k):>9} {'degraded':>9}"]
    for name, label in (("drift", "served, real-time drift"), ("frozen", "served, frozen vectors"),
                        ("reference", "drift reference (numpy)"), ("popularity", "popularity")):
        tally = report.tallies[name]
        lines.append(f"{label:<28} {tally.hr:8.4f} {tally.ndcg:9.4f} {tally.degraded:9d}")
    figures = report.result(k)
    lines.append(f"drift gain (drift / frozen) {figures['drift_gain']:.2f}; served drift / reference "
                 f"{figures['ratio_vs_drift_reference']:.2f}; vector moves held back by guardrails: {report.held_back:,}")
    return "\n".join(lines)
