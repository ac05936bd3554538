"""The CLI's calls to a running gateway: `feedserve feed`, `trace`, `mode`, `cost`, `generate`, `interact`."""

from __future__ import annotations

import argparse
import sys
import time

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from cli.access import gateway_channel
from feedserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generator_pb2

__all__ = ["feed_command", "trace_command", "mode_command", "cost_command", "generate_command", "interact_command",
           "relay", "print_json", "JSON_HELP"]

JSON_HELP = "print the answer as JSON (protobuf's JSON mapping: field names as in the .proto, 64-bit integers as strings)"


def print_json(message: Message) -> None:
    """A response as JSON, for scripts: the canonical protobuf mapping, field names as the contracts spell them."""
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def _call(args: argparse.Namespace, method: str, request):
    with gateway_channel(args.gateway, args.key) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        try:
            return getattr(stub, method)(request, timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return None


def _timed_feed(args: argparse.Namespace, feature_tag: str) -> tuple[gateway_pb2.FeedResponse | None, float]:
    """Call Feed for args.user and args.k; the response (None on error, reported) and the client's round trip."""
    request = gateway_pb2.FeedRequest(user_id=args.user, k=args.k, context=common_pb2.RequestContext(feature_tag=feature_tag))
    start = time.perf_counter()
    response = _call(args, "Feed", request)
    return response, (time.perf_counter() - start) * 1e3


def feed_command(args: argparse.Namespace) -> int:
    response, elapsed_ms = _timed_feed(args, "cli")
    if response is None:
        return 1
    if args.json:
        print_json(response)
        return 0
    flags = [f for f, on in (("cold start", response.cold_start), ("degraded", response.degraded)) if on]
    print(f"feed for user {args.user}: {len(response.items)} items, model {response.model_version}"
          + (f" [{', '.join(flags)}]" if flags else "") + f", request {response.request_id}")
    print(f"{'#':>3}  {'item':>8}  {'score':>7}  {'category':<13} {'sources':<22} title")
    for rank, item in enumerate(response.items, 1):
        print(f"{rank:>3}  {item.item_id:>8}  {item.score:7.4f}  {item.category:<13} {','.join(item.sources):<22} {item.title}")
    print()
    print(relay(response.hops, elapsed_ms))
    return 0


def relay(hops, client_ms: float) -> str:
    """One request as a relay: who held the baton and for how long, and the gaps between the legs."""
    if not hops:
        return "no hops recorded"
    origin = min(h.start_ns for h in hops)
    by = {(h.service, h.stage): h for h in hops}
    handle = by.get(("gateway", "handle"))
    lines = [f"{'leg':<34} {'start ms':>9} {'took ms':>9}  note"]

    def row(label: str, hop, note: str = "") -> None:
        lines.append(f"{label:<34} {(hop.start_ns - origin) / 1e6:9.3f} {(hop.end_ns - hop.start_ns) / 1e6:9.3f}  {note}")

    for call, service in (("paramserver_call", "paramserver"), ("ranker_call", "ranker"), ("cache", None)):
        outer = by.get(("gateway", call))
        if outer is None:
            continue
        inner = [h for h in hops if h.service == service]
        served = sum(h.end_ns - h.start_ns for h in inner)
        note = f"transport and queueing {(outer.end_ns - outer.start_ns - served) / 1e6:.3f} ms" if inner else ""
        row(f"gateway -> {service or 'feed cache'}", outer, note)
        for hop in sorted(inner, key=lambda h: h.start_ns):
            row(f"    {service} {hop.stage}", hop)
    if handle is not None:
        row("gateway handled (received -> sent)", handle)
        gap = client_ms - (handle.end_ns - handle.start_ns) / 1e6
        lines.append(f"{'client <-> gateway transport':<34} {'':>9} {gap:9.3f}  client saw {client_ms:.3f} ms end to end")
    return "\n".join(lines)


def trace_command(args: argparse.Namespace) -> int:
    response, elapsed_ms = _timed_feed(args, "trace")
    if response is None:
        return 1
    flags = "".join(f" [{f}]" for f, on in (("cached", response.cached), ("degraded: " + response.degraded_reason,
                                                                           response.degraded)) if on)
    print(f"request {response.request_id} for user {args.user}{flags}")
    print(relay(response.hops, elapsed_ms))
    return 0


def mode_command(args: argparse.Namespace) -> int:
    with gateway_channel(args.gateway, args.key) as channel:
        stub = gateway_pb2_grpc.GatewayAdminStub(channel)
        try:
            if args.set is None:
                status = stub.GetMode(gateway_pb2.GetModeRequest(), timeout=args.timeout)
            else:
                mode = gateway_pb2.MODE_UNSPECIFIED if args.set == "auto" else gateway_pb2.Mode.Value(f"MODE_{args.set.upper()}")
                status = stub.SetMode(gateway_pb2.SetModeRequest(mode=mode), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    name = gateway_pb2.Mode.Name(status.mode).removeprefix("MODE_").lower()
    print(f"mode {name} ({'forced' if status.forced else 'automatic: ' + status.reason}); "
          f"{status.candidate_count} candidates, batching window {status.batch_delay_us} us, "
          f"generation {'on' if status.generation_enabled else 'off'}, "
          f"{status.in_flight} feeds in flight")
    return 0


def cost_command(args: argparse.Namespace) -> int:
    with gateway_channel(args.gateway, args.key) as channel:
        try:
            report = gateway_pb2_grpc.GatewayAdminStub(channel).GetCost(
                gateway_pb2.GetCostRequest(window_s=args.window), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    if args.json:
        print_json(report)
        return 0
    print(f"spend over the last {report.window_s} s (CPU second priced at {report.cpu_second_price:g}"
          + (f"; alert above {report.alert_per_1k:g} per 1,000 requests" if report.alert_per_1k else "") + ")")
    print(f"{'feature':<20} {'requests':>9} {'cpu s':>10} {'tokens':>9} {'cost':>12} {'per 1k req':>12} {'alerts':>7}")
    for f in report.features:
        print(f"{f.feature_tag:<20} {f.requests:>9} {f.cpu_seconds:10.4f} {f.tokens:>9} {f.cost:12.8f} "
              f"{f.cost_per_1k:12.8f} {f.alerts:>7}")
    if not report.features:
        print("(no requests in the window)")
    return 0


def generate_command(args: argparse.Namespace) -> int:
    """Stream a generation to stdout as it arrives; usage and hops go to stderr."""
    request = generator_pb2.GenerateRequest(
        prompt=args.prompt, max_tokens=args.max_tokens, model=args.model, user_id=args.user, stop=args.stop,
        banned_words=args.banned, allowed_words=args.allowed, pattern=args.pattern,
        context=common_pb2.RequestContext(feature_tag=args.tag))
    start = time.perf_counter()
    with gateway_channel(args.gateway, args.key) as channel:
        try:
            for chunk in gateway_pb2_grpc.GatewayStub(channel).Generate(request, timeout=args.timeout):
                print(chunk.text, end="", flush=True)
                if chunk.final:
                    u = chunk.usage
                    print(f"\n--\nmodels {','.join(u.models)}  tokens in {u.tokens_in} out {u.tokens_out}  "
                          f"ttft {u.ttft_ms:.1f} ms  inter-token {u.inter_token_ms:.2f} ms  "
                          f"escalated {'yes' if u.escalated else 'no'}  cache {u.cache or 'miss'}  cost {u.cost:.8f}  "
                          f"client {(time.perf_counter() - start) * 1e3:.1f} ms", file=sys.stderr)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


def interact_command(args: argparse.Namespace) -> int:
    event = common_pb2.EventType.Value(f"EVENT_TYPE_{args.event.upper()}")
    response = _call(args, "Interact", gateway_pb2.InteractRequest(user=args.user, item=args.item, event=event))
    if response is None:
        return 1
    moved = f"moved the user vector by rate {response.rate:+.2f}" if response.applied else "changed nothing"
    if response.held_back:
        guardrail = common_pb2.Guardrail.Name(response.held_back).removeprefix("GUARDRAIL_").lower()
        moved = f"the vector's move was held back by the {guardrail} guardrail"
    print(f"{args.event} by user {args.user} on item {args.item}: {moved} (logged at catalog sequence {response.sequence})")
    return 0
