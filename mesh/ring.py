"""The shared-memory fast path: a service's ring server, and a client's channel to it."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from errors import (
    DeadlineExceeded,
    FeedserveError,
    InvalidArgument,
    ResourceExhausted,
    error_from_status,
)
from feedserve.v1 import transport_pb2, transport_pb2_grpc
from mesh.logging import get_logger
from mesh.methods import Handler, Method, Tensors, methods_of, tensor_fields
from mesh.tensors import DTYPES
from mesh.tracing import server_span
from native import MSG_ALIGN, MSG_DATA_OFFSET, SHM_DIR, Ring, remove_stale_segments, segment_name

__all__ = ["RingServer", "RingChannel", "Reply", "RingConfig", "HandshakeServicer", "boot_id", "RingTooSmall", "RingBroken",
           "DispatcherKilled", "RING_VERSION", "RING_GROUP_ENV"]

RING_VERSION = 1
# "1": segments are 0660, for colocated services that run as separate users of one group (compose.yaml)
RING_GROUP_ENV = "FEEDSERVE_RING_GROUP"
# A ring status outside gRPC's codes: the message did not fit a slot, send this call over gRPC.
STATUS_USE_GRPC = 1000
_CODES = {dt: code for code, dt in DTYPES.items()}
_log = get_logger("ring")


def boot_id() -> str:
    """This host's boot id: two processes can share a ring only if these match."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _align(value: int) -> int:
    return -(-value // MSG_ALIGN) * MSG_ALIGN


class RingTooSmall(Exception):
    """A message does not fit a slot: that call goes over gRPC instead."""


class RingBroken(Exception):
    """The ring cannot carry calls (peer dead, closing, corrupt): fail over to gRPC and reattach later."""


class _Undeliverable(Exception):
    """The slot was taken from the dispatcher before it could answer (a dead or hostile client)."""


class DispatcherKilled(BaseException):
    """Raised inside a dispatcher by the test hook `RingServer.kill_dispatcher`: a dispatcher dying of a bug."""


# A dispatcher that dies is restarted; more than this many deaths within the window close the ring.
MAX_RESTARTS, RESTART_WINDOW_S = 5, 10.0


@dataclass(frozen=True)
class RingConfig:
    """Sizes and waiting policy of a ring; every field has a sane default."""

    lanes: int = 8
    slots_per_lane: int = 4
    request_capacity: int = 1 << 20
    response_capacity: int = 1 << 20
    spin_us: float = float(os.environ.get("FEEDSERVE_RING_SPIN_US", "50"))  # busy-wait, then sleep on the futex
    stale_s: float = 0.5  # a server whose heartbeat is older than this is dead


class _SlotOutputs:
    """Handler outputs placed straight in the response area of a slot."""

    def __init__(self, view: memoryview, area: int, capacity: int) -> None:
        self.view, self.area, self.capacity = view, area, capacity
        self.cursor = MSG_DATA_OFFSET
        self.items: list[tuple[str, int, tuple[int, ...], int]] = []

    def empty(self, field: str, dtype: np.dtype | type, shape: tuple[int, ...]) -> np.ndarray:
        dt = np.dtype(dtype)
        count = math.prod(shape)
        offset = _align(self.cursor)
        if offset + count * dt.itemsize > self.capacity:
            raise RingTooSmall(f"output {field} does not fit the response area")
        self.cursor = offset + count * dt.itemsize
        self.items.append((field, _CODES[dt], tuple(shape), offset))
        return np.frombuffer(self.view, dt, count, self.area + offset).reshape(shape)


class RingServer:
    """Serves a service's unary methods over its own shm segment, from supervised dispatcher threads."""

    def __init__(
        self,
        service: str,
        descriptor: ServiceDescriptor,
        handlers: Mapping[str, Handler],
        config: RingConfig = RingConfig(),
        log_calls: bool = True,
        workers: int = 1,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """`on_failure` runs once if the dispatchers cannot be kept alive (the service turns NOT_SERVING)."""
        removed = remove_stale_segments()
        if removed:
            _log.info("removed stale segments", segments=removed)
        self.service = service
        self.config = config
        self.log_calls = log_calls
        methods = methods_of(descriptor)
        self.methods = {m.ident: (m, handlers[name], frozenset(tensor_fields(m.request_type.DESCRIPTOR)))
                        for name, m in methods.items() if name in handlers}
        self.method_paths = [f"/{descriptor.full_name}/{m.name}" for m in descriptor.methods]
        self.ring = Ring.create(
            segment_name(service, f"{id(self):x}"[-6:]),
            lanes=config.lanes,
            slots_per_lane=config.slots_per_lane,
            request_capacity=config.request_capacity,
            response_capacity=config.response_capacity,
        )
        if os.environ.get(RING_GROUP_ENV) == "1":
            # colocated services running as separate users of one group (compose.yaml): the group may attach, and
            # still nobody else (the segment is made 0600 and widened only here, before any handshake names it)
            os.chmod(SHM_DIR / self.ring.name.lstrip("/"), 0o660)
        self.view = memoryview(self.ring)
        self._stop = threading.Event()
        # several dispatchers let slow handlers overlap (the ranker batches concurrent requests)
        self._threads = [threading.Thread(target=self._supervise, name=f"ring-{service}-{n}", daemon=True)
                         for n in range(workers)]
        self.served = 0
        self.on_failure = on_failure
        self.restarts = 0  # dispatcher deaths survived
        self.restarted = threading.Event()  # set at every restart (tests and chaos runs wait on it)
        self.failed = False  # the dispatchers could not be kept alive: the ring is closed
        self._deaths: list[float] = []
        self._kills = 0
        self._lock = threading.Lock()

    @property
    def segment(self) -> str:
        return self.ring.name

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop dispatching, then unlink the segment; parked clients see `closing` and fail over."""
        self._stop.set()
        self.ring.shutdown()  # wakes the dispatchers out of next(), and every parked client
        for thread in self._threads:
            thread.join(timeout)
        self.ring.close()  # unmaps once the last view of the segment is gone

    def handshake(self) -> transport_pb2.HandshakeResponse:
        return transport_pb2.HandshakeResponse(
            segment=self.ring.name,
            server_pid=os.getpid(),
            boot_id=boot_id(),
            methods=self.method_paths,
            ring_version=RING_VERSION,
        )

    def kill_dispatcher(self, times: int = 1) -> None:
        """Test hook: the next `times` dispatcher iterations die as if of a bug (chaos tests, supervision)."""
        with self._lock:
            self._kills += times

    def _supervise(self) -> None:
        """Run one dispatcher; a dispatcher must never die silently: restart it, or close the ring."""
        while not self._stop.is_set():
            try:
                self._run()
                return
            except BaseException as exc:  # noqa: BLE001 - whatever killed it, the service must know
                if self._stop.is_set():
                    return
                now = time.monotonic()
                with self._lock:
                    self.restarts += 1
                    self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW_S] + [now]
                    give_up = len(self._deaths) > MAX_RESTARTS and not self.failed
                    if give_up:
                        self.failed = True
                _log.error("ring dispatcher died", service=self.service, error=repr(exc), restarts=self.restarts,
                           exc_info=not isinstance(exc, DispatcherKilled))
                if give_up:
                    self._fail()
                    return
                if self.failed:
                    return
                self.restarted.set()

    def _fail(self) -> None:
        """Close the ring so that every client fails over to gRPC, and report the service NOT_SERVING."""
        _log.error("ring dispatchers cannot be kept alive: closing the ring", service=self.service,
                   deaths_in_window=len(self._deaths), window_s=RESTART_WINDOW_S)
        self.ring.shutdown()
        if self.on_failure is not None:
            self.on_failure()

    def _run(self) -> None:
        last_reap = time.monotonic()
        while not self._stop.is_set():
            if self._kills:
                with self._lock:
                    self._kills -= 1
                raise DispatcherKilled("killed through the test hook")
            try:
                got = self.ring.next(0.1, spin_us=self.config.spin_us)
            except BrokenPipeError:
                return  # the ring is closing
            if got is None or time.monotonic() - last_reap > 1.0:
                self.ring.reap()  # free the lanes of clients that died
                last_reap = time.monotonic()
            if got is not None:
                self._serve(*got)

    def _reply(self, slot: int, method: int, status: int, request_id: int, message: bytes,
               items: Sequence[tuple[str, int, tuple[int, ...], int]] = ()) -> int:
        """Encode and publish a response. RingTooSmall: it does not fit; _Undeliverable: the slot is gone."""
        try:
            length = self.ring.encode(slot, True, method, status, request_id, 0, "", "", message, items)
        except ValueError as exc:
            raise RingTooSmall(str(exc)) from None
        try:
            self.ring.complete(slot, length)
        except ValueError as exc:  # complete() found the slot in a state it never left it in
            raise _Undeliverable(str(exc)) from None
        return length

    def _reply_status(self, slot: int, method: int, status: int, request_id: int, detail: str) -> int:
        """An error reply; one that cannot be delivered is logged, never raised into the dispatcher."""
        try:
            return self._reply(slot, method, status, request_id, detail.encode()[:4096])
        except (RingTooSmall, _Undeliverable) as exc:
            _log.warning("ring reply undeliverable", service=self.service, slot=slot, error=str(exc))
            return 0

    def _serve(self, slot: int, length: int) -> None:
        start = time.perf_counter_ns()
        method_id, request_id, status = 0, 0, grpc.StatusCode.OK
        try:
            (method_id, _, request_id, deadline, traceparent, feature_tag, proto_at, proto_len,
             tensors) = self.ring.decode(slot, False, length)
            entry = self.methods.get(method_id)
            if entry is None:
                raise _Status(grpc.StatusCode.UNIMPLEMENTED, f"method id {method_id} is not served on this ring")
            method, handler, allowed = entry
            if deadline and time.monotonic_ns() > deadline:
                raise DeadlineExceeded("deadline passed before the ring request was served")
            try:
                request = method.request_type.FromString(self.view[proto_at:proto_at + proto_len])
            except DecodeError as exc:
                raise InvalidArgument("message", f"does not parse as {method.request_type.__name__}: {exc}") from None
            inputs = {}
            for name, dtype, shape, offset in tensors:
                if name not in allowed:
                    raise InvalidArgument(name, f"is not a tensor field of {method.request_type.__name__}")
                array = np.frombuffer(self.view, DTYPES[dtype], math.prod(shape), offset).reshape(shape)
                array.flags.writeable = False
                inputs[name] = array
            outputs = _SlotOutputs(self.view, self.ring.area_offset(slot, True), self.ring.response_capacity)
            if traceparent:  # a traced call: the same span a gRPC call would get
                with server_span(self.method_paths[method_id], traceparent, transport="ring"):
                    response = handler(request, inputs, outputs)
            else:
                response = handler(request, inputs, outputs)
            out_len = self._reply(slot, method_id, 0, request_id, response.SerializeToString(), outputs.items)
        except RingTooSmall as exc:
            status = grpc.StatusCode.RESOURCE_EXHAUSTED
            out_len = self._reply_status(slot, method_id, STATUS_USE_GRPC, request_id, str(exc))
        except _Undeliverable as exc:
            status = grpc.StatusCode.CANCELLED
            out_len = 0
            _log.warning("ring reply undeliverable", service=self.service, slot=slot, error=str(exc))
        except (FeedserveError, _Status) as exc:
            status = exc.code
            out_len = self._reply_status(slot, method_id, exc.code.value[0], request_id, str(exc))
        except ValueError as exc:  # decode() rejected the slot: a corrupt or hostile header
            status = grpc.StatusCode.INVALID_ARGUMENT
            out_len = self._reply_status(slot, method_id, status.value[0], request_id, f"ring message: {exc}")
        except Exception as exc:  # noqa: BLE001 - a handler bug becomes INTERNAL, never a dead dispatcher
            _log.exception("ring handler failed", service=self.service)
            status = grpc.StatusCode.INTERNAL
            out_len = self._reply_status(slot, method_id, status.value[0], request_id, f"internal error: {type(exc).__name__}")
        self.served += 1
        if self.log_calls:
            _log.info("rpc", transport="ring", method=self.method_paths[method_id] if method_id < len(self.method_paths) else method_id,
                      request_id=f"{request_id:016x}", status=status.name, input_bytes=length, output_bytes=out_len,
                      latency_ms=round((time.perf_counter_ns() - start) / 1e6, 3))


class _Status(Exception):
    """A status with no FeedserveError class of its own (UNIMPLEMENTED)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Reply:
    """A response and its tensors; on the ring the tensors are views of the slot until release()."""

    message: Message
    tensors: dict[str, np.ndarray]
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RingChannel:
    """One client process's attachment to a server's ring: a lane of slots, calls that block (GIL released)."""

    def __init__(self, service: str, segment: str, config: RingConfig = RingConfig()) -> None:
        self.service = service
        self.config = config
        self.ring = Ring.attach(segment)
        self.view = memoryview(self.ring)

    def close(self) -> None:
        """Hand the lane back; the mapping lives on while any reply's views do."""
        self.ring.close()

    def alive(self) -> bool:
        return self.ring.alive(self.config.stale_s)

    def call(self, method: Method, request: Message, tensors: Tensors, timeout: float,
             request_id: int = 0, traceparent: str = "", feature_tag: str = "") -> Reply:
        """Send one request through a slot and wait for its response, all within `timeout` seconds."""
        ring = self.ring
        deadline_ns = time.monotonic_ns() + int(timeout * 1e9)
        try:
            slot = ring.claim(timeout)
        except TimeoutError:
            raise ResourceExhausted(f"{self.service} ring is full: no slot freed within the deadline") from None
        except BrokenPipeError as exc:
            raise RingBroken(str(exc)) from None
        submitted = False
        try:
            area = ring.area_offset(slot, False)
            cursor, items = MSG_DATA_OFFSET, []
            for name, array in tensors.items():
                offset = _align(cursor)
                if offset + array.nbytes > ring.request_capacity:
                    raise RingTooSmall(f"tensor {name} does not fit the request area")
                np.frombuffer(self.view, array.dtype, array.size, area + offset).reshape(array.shape)[...] = array
                items.append((name, _CODES[array.dtype], array.shape, offset))
                cursor = offset + array.nbytes
            try:
                length = ring.encode(slot, False, method.ident, 0, request_id, deadline_ns, traceparent,
                                     feature_tag, request.SerializeToString(), items)
            except ValueError as exc:
                raise RingTooSmall(str(exc)) from None
            submitted = True
            try:
                response_len = ring.call(slot, length, max(deadline_ns - time.monotonic_ns(), 0) / 1e9,
                                         spin_us=self.config.spin_us, stale_s=self.config.stale_s)
            except TimeoutError:
                raise DeadlineExceeded(f"{self.service} did not answer within the deadline") from None
            except (BrokenPipeError, ValueError) as exc:
                raise RingBroken(f"{self.service} ring: {exc}") from None
            return self._reply(method, slot, response_len)
        except BaseException:
            if not submitted:
                ring.release(slot)  # never submitted: the slot is still ours
            raise

    def _reply(self, method: Method, slot: int, length: int) -> Reply:
        ring = self.ring
        try:
            (_, status, _, _, _, _, proto_at, proto_len, tensors) = ring.decode(slot, True, length)
        except ValueError as exc:
            ring.release(slot)
            raise RingBroken(f"{self.service} sent a corrupt response: {exc}") from None
        if status:
            detail = bytes(self.view[proto_at:proto_at + proto_len]).decode(errors="replace")
            ring.release(slot)
            if status == STATUS_USE_GRPC:
                raise RingTooSmall(detail)
            code = next((c for c in grpc.StatusCode if c.value[0] == status), grpc.StatusCode.UNKNOWN)
            raise error_from_status(code, detail)
        message = method.response_type.FromString(self.view[proto_at:proto_at + proto_len])
        arrays = {name: np.frombuffer(self.view, DTYPES[dtype], math.prod(shape), offset).reshape(shape)
                  for name, dtype, shape, offset in tensors}
        return Reply(message, arrays, lambda: ring.release(slot))


class HandshakeServicer(transport_pb2_grpc.TransportServicer):
    """Tells a client which segment to map; an empty segment means "no ring here, use gRPC"."""

    def __init__(self, ring: RingServer | None) -> None:
        self.ring = ring

    async def Handshake(
        self, request: transport_pb2.HandshakeRequest, context: grpc.aio.ServicerContext
    ) -> transport_pb2.HandshakeResponse:
        if self.ring is None or request.boot_id != boot_id():
            return transport_pb2.HandshakeResponse(boot_id=boot_id(), ring_version=RING_VERSION)
        return self.ring.handshake()


def transport_registration(ring: RingServer | None) -> dict[str, Callable[[grpc.aio.Server], None]]:
    """The Transport service to register beside a service, so that clients can find its ring."""
    servicer = HandshakeServicer(ring)
    name = transport_pb2.DESCRIPTOR.services_by_name["Transport"].full_name
    return {name: lambda server: transport_pb2_grpc.add_TransportServicer_to_server(servicer, server)}
