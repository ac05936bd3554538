"""Bad input, everywhere: requests for every RPC built from its protobuf descriptor (random values and sizes, NaN,
odd unicode, huge repeated fields, unknown enums), sent through the gateway with a valid key and straight to
each internal service. Every answer is OK or a named status, never UNKNOWN or INTERNAL; every server still
answers afterwards; and a refused request changes nothing (the catalog's sequence and every paramserver row).
Then hostile ones, on purpose: exploding patterns, lists and tags at and past their caps, oversized messages;
named statuses in time, and memory bounded over 1,000 of them."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import uvloop
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog import open_store
from feedserve.v1 import catalog_pb2, common_pb2, gateway_pb2, generator_pb2, paramserver_pb2, ranker_pb2, transport_pb2
from gateway.keys import KeyStore
from tests.stack import generation_stack, running_stack

# the gateway's port (with an admin key, so that every method is reachable) and the internal services'
SERVICES = {
    "gateway": [gateway_pb2.DESCRIPTOR.services_by_name["Gateway"], gateway_pb2.DESCRIPTOR.services_by_name["GatewayAdmin"],
                catalog_pb2.DESCRIPTOR.services_by_name["Catalog"]],
    "paramserver": [paramserver_pb2.DESCRIPTOR.services_by_name["ParamServer"],
                    transport_pb2.DESCRIPTOR.services_by_name["Transport"]],
    "ranker": [ranker_pb2.DESCRIPTOR.services_by_name["Ranker"], transport_pb2.DESCRIPTOR.services_by_name["Transport"]],
}
NOT_NAMED = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
EXAMPLES = int(os.environ.get("FEEDSERVE_FUZZ_EXAMPLES", "12"))  # per method; `make fuzz` runs more
ODD_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", "\x00", "\ud7ff\ue000", "𝔣𝔢𝔢𝔡", "a" * 5000, " ", "-1",
                                                            "NaN", "1e309", "user\nid", "../../etc/passwd"]))
INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, -(2**63)]))
UINT64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**32, 2**64 - 1]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.sampled_from([0.0, -0.0, 1e308]))
SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: FLOATS, FieldDescriptor.TYPE_FLOAT: st.floats(width=32, allow_nan=True),
    FieldDescriptor.TYPE_INT64: INT64, FieldDescriptor.TYPE_SINT64: INT64, FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT64: UINT64, FieldDescriptor.TYPE_FIXED64: UINT64,
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_BOOL: st.booleans(), FieldDescriptor.TYPE_STRING: ODD_TEXT,
    FieldDescriptor.TYPE_BYTES: st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x00" * 4096])),
}


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_ENUM:  # known values, and unknown ones (open enums keep them)
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-5, 1000))
    return SCALARS[field.type]


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy:
    """Messages of `descriptor`: each field absent or random; repeated fields small, or now and then huge."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields = {}
    for field in descriptor.fields:
        value = _value(field, depth)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, val = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            fields[field.name] = st.dictionaries(_value(key, depth), _value(val, depth), max_size=4)
        elif field.is_repeated:
            # huge: one drawn value repeated thousands of times (hypothesis draws long lists slowly)
            huge = st.builds(lambda v, n: [v] * n, value, st.integers(2_000, 20_000)) \
                if field.message_type is None else st.nothing()
            fields[field.name] = st.one_of(st.lists(value, max_size=5), huge)
        else:
            fields[field.name] = value

    @st.composite
    def build(draw: st.DrawFn):
        message = cls()
        for name, strategy in fields.items():
            if not draw(st.booleans()):
                continue
            value = draw(strategy)
            field = descriptor.fields_by_name[name]
            try:
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    target = getattr(message, name)
                    for k, v in value.items():
                        if field.message_type.fields_by_name["value"].message_type is not None:
                            target[k].CopyFrom(v)
                        else:
                            target[k] = v
                elif field.is_repeated:
                    target = getattr(message, name)
                    if field.message_type is not None:
                        for v in value:
                            target.add().CopyFrom(v)
                    else:
                        target.extend(value)
                elif field.message_type is not None:
                    getattr(message, name).CopyFrom(value)
                else:
                    setattr(message, name, value)
            except (ValueError, TypeError):
                pass  # protobuf refuses it on the client side (an unpaired surrogate in a string): not sent
        return message

    return build()


class _Running:
    """A stack on a background event loop, so that hypothesis can drive it with blocking calls."""

    def __init__(self, catalog, manifest, state_dir: Path, keys: KeyStore) -> None:
        self.ready, self.done = threading.Event(), threading.Event()
        self.stack = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(catalog, manifest, state_dir, keys), daemon=True)

    def _run(self, catalog, manifest, state_dir, keys) -> None:
        async def body() -> None:
            async with running_stack(catalog, manifest, state_dir, keys=keys) as stack:
                self.stack = stack
                self.ready.set()
                await asyncio.get_running_loop().run_in_executor(None, self.done.wait)

        try:
            asyncio.run(body())
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            self.error = exc
            self.ready.set()


@pytest.fixture(scope="module")
def live(catalog, manifest, tmp_path_factory) -> Iterator[tuple]:
    state = tmp_path_factory.mktemp("bad-input")
    keys = KeyStore(state / "keys.db")
    _, admin = keys.create("fuzz", "admin")
    running = _Running(catalog, manifest, state, keys)
    running.thread.start()
    running.ready.wait(120)
    if running.error is not None:
        raise running.error
    channels = {name: grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
                for name, port in running.stack.ports.items()}
    yield running.stack, channels, admin
    for channel in channels.values():
        channel.close()
    running.done.set()
    running.thread.join(60)
    keys.close()


def _fingerprint(stack) -> tuple:
    """What a refused request must not change: the catalog's sequence and every paramserver row."""
    digest = hashlib.sha256()
    for table in sorted(stack.paramserver_core.tables):
        keys, rows, _ = stack.paramserver_core.tables[table].items()
        order = keys.argsort()
        digest.update(keys[order].tobytes())
        digest.update(rows[order].tobytes())
    return open_store(stack.store).sequence(), digest.hexdigest()


def _methods() -> list[tuple[str, MethodDescriptor]]:
    return [(target, method) for target, services in SERVICES.items() for service in services for method in service.methods
            if not method.client_streaming]


def _answered_or_named(stack, channel: grpc.Channel, method: MethodDescriptor, body: bytes, metadata) -> None:
    """Send `body` to `method`: OK, or a named status within the deadline that changed nothing."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    before = _fingerprint(stack)
    call = (channel.unary_stream if method.server_streaming else channel.unary_unary)(
        path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        reply = call(body, timeout=20, metadata=metadata)
        if method.server_streaming:
            for _ in reply:
                pass
    except grpc.RpcError as error:
        code = error.code()
        assert code not in NOT_NAMED, f"{path}: {code.name}: {error.details()}"
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{path} hung on a bad request"
        assert _fingerprint(stack) == before, f"{path} refused with {code.name} but changed state"


@pytest.mark.parametrize(("target", "method"), _methods(), ids=lambda v: v if isinstance(v, str) else v.full_name)
def test_any_request_gets_ok_or_a_named_status_and_a_refusal_changes_nothing(live, target: str, method: MethodDescriptor) -> None:
    stack, channels, admin = live
    channel = channels[target]
    cls = message_factory.GetMessageClass(method.input_type)
    metadata = (("authorization", f"Bearer {admin}"),) if target == "gateway" else ()
    health = health_pb2_grpc.HealthStub(channel)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(messages(method.input_type))
    def check(request) -> None:
        _answered_or_named(stack, channel, method, cls.SerializeToString(request), metadata)
        served = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert served.status == health_pb2.HealthCheckResponse.SERVING

    check()


@pytest.mark.parametrize(("target", "method"), _methods(), ids=lambda v: v if isinstance(v, str) else v.full_name)
def test_a_body_that_is_no_message_gets_a_named_status(live, target: str, method: MethodDescriptor) -> None:
    """Bytes that do not parse as the method's request (or parse by chance): OK or a named status, never gRPC's
    UNKNOWN from a failed parse, and nothing changes when refused."""
    stack, channels, admin = live
    channel = channels[target]
    metadata = (("authorization", f"Bearer {admin}"),) if target == "gateway" else ()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(st.binary(min_size=1, max_size=256), st.sampled_from([b"\xff" * 64, b"\x0a\xff\xff\xff\x0f"])))
    def check(body: bytes) -> None:
        _answered_or_named(stack, channel, method, body, metadata)

    check()


# Hostile on purpose: automata that explode, lists and tags at and past their caps, messages past the public port's
# limit. Each kind is a function of the request's number, so that tags and prompts are new every time (no cache
# answers them) while the patterns cycle through a set (as an attacker resending them would).
def _nested_repetition(rng: random.Random) -> str:
    """A random pattern of counted repetitions nested one to three deep, around an atom with choices."""
    pattern = rng.choice([".", "a|b", "[a-z]", "\\w", "x*", "(a|b)*a", "[0-9a-f]"])
    for _ in range(rng.randint(1, 3)):
        pattern = f"({pattern}){{{rng.randint(10, 999)}}}"
    return pattern


HOSTILE_PATTERNS = [*(f"(a|b)*a(a|b){{{n}}}" for n in (14, 16, 20, 24, 40)), "((.{999}){999}){999}", "(.{500}){500}",
                    "(x{1000}){1000}", "([a-z]{50}){50}", "(a*)*b{5000}", "((a|b|c|d){30}){30}", "(\\w{99}\\d{99}){99}",
                    "[a-z]{3}(x|y){2}",  # (everyday: it is built and decoded)
                    *(_nested_repetition(random.Random(seed)) for seed in range(20))]


def _hostile(n: int) -> tuple[str, object]:
    """The n-th hostile request: ("feed" | "generate", request)."""
    tag = f"t{n}-" + "x" * 40  # a new valid tag each time: booked as `other` past the cap
    kind = n % 8
    if kind in (0, 1, 2):
        return "generate", generator_pb2.GenerateRequest(
            prompt=f"hostile {n}", max_tokens=8, pattern=HOSTILE_PATTERNS[n % len(HOSTILE_PATTERNS)],
            context=common_pb2.RequestContext(feature_tag=tag))
    if kind == 3:
        return "generate", generator_pb2.GenerateRequest(prompt=f"tag {n}", max_tokens=4,
                                                         context=common_pb2.RequestContext(feature_tag="T" * (60 + n % 9)))
    if kind == 4:
        return "feed", gateway_pb2.FeedRequest(user_id=1, k=20, exclude_ids=range(1_000 + n % 2),
                                               context=common_pb2.RequestContext(feature_tag=tag))
    if kind == 5:
        return "feed", gateway_pb2.FeedRequest(user_id=1, k=20, include_labels=["x" * (256 + n % 2)] * (1_000 + n % 2))
    if kind == 6:
        return "feed", gateway_pb2.FeedRequest(user_id=1, k=20, exclude=[f"item-{i}" for i in range(999)],
                                               context=common_pb2.RequestContext(feature_tag=tag[:64 + n % 2]))
    return "feed", _OVERSIZED


# 600,000 ids of 9 bytes each: 5.4 MiB, past the public port's 4 (built once: building it is the slow part)
_OVERSIZED = gateway_pb2.FeedRequest(user_id=1, k=20, exclude_ids=range(2**62, 2**62 + 600_000))


def _rss_mib() -> float:
    """This process's resident memory (the in-process gateway, generator and paramserver)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_hostile_requests_get_named_statuses_in_time_and_leave_memory_bounded(generation_home, catalog, tmp_path) -> None:
    """1,000 hostile requests (exploding patterns, lists and tags at and past their caps, a 5 MiB message) after a
    warm-up round: every answer is OK or a named status within its deadline, health stays SERVING, and the
    process holding the gateway and generator grows by at most 50 MiB. (Under uvloop only, as services run.)"""
    seen: dict[str, int] = {}

    async def send(stack, n: int) -> None:
        kind, request = _hostile(n)
        try:
            if kind == "feed":
                await stack.gateway.Feed(request, timeout=20)
            else:
                async for _ in stack.gateway.Generate(request, timeout=20):
                    pass
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
            assert code not in NOT_NAMED and code != grpc.StatusCode.DEADLINE_EXCEEDED, (n, code, error.details())
        seen[code.name] = seen.get(code.name, 0) + 1

    async def body() -> None:
        async with generation_stack(generation_home, catalog, tmp_path) as stack:
            for n in range(80):  # a warm-up round: every pattern built once, caches at their working size
                await send(stack, n)
            gc.collect()
            before = _rss_mib()
            for n in range(80, 1_080):
                await send(stack, n)
            gc.collect()
            grown = _rss_mib() - before
            print(f"RSS {before:.0f} MiB -> {before + grown:.0f} MiB over 1,000 hostile requests; answers {seen}")
            assert grown <= 50, f"grew {grown:.1f} MiB over 1,000 hostile requests"
            served = await stack.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert served.status == health_pb2.HealthCheckResponse.SERVING

    uvloop.run(body())
    assert seen.get("INVALID_ARGUMENT", 0) > 0 and seen.get("RESOURCE_EXHAUSTED", 0) > 0, seen
