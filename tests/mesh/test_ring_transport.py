"""The ring transport end to end: real rings, real gRPC servers, a real child process killed mid-request."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from cli.stack import free_ports, handshake_segment, wait_serving
from errors import InvalidArgument, ResourceExhausted, Unavailable
from feedserve.v1 import ranker_pb2, ranker_pb2_grpc, transport_pb2, transport_pb2_grpc
from mesh.grpc_server import start_server
from mesh.methods import methods_of
from mesh.ring import RING_GROUP_ENV, HandshakeServicer, RingChannel, RingConfig, RingServer
from mesh.transport import Transport
from native import SHM_DIR
from ranker.service import RankerServicer

RANKER = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"]
SMALL_RING = RingConfig(lanes=2, slots_per_lane=2, request_capacity=64 << 10, response_capacity=64 << 10)


class Blocking:
    """A Ranker-shaped handler that answers at once, or, for user 666 on the ring thread, waits for release."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, request, tensors, outputs):
        if request.user_id == 666 and threading.current_thread().name.startswith("ring-"):
            self.started.set()
            self.release.wait(30)
        scores = outputs.empty("scores", np.float32, (request.k,))
        scores[:] = np.arange(request.k, dtype=np.float32)
        return ranker_pb2.RankResponse(candidates_considered=request.k, model_name="blocking")


async def _serve(handler, handshake: HandshakeServicer):
    """A gRPC server for a Ranker-shaped handler, with a handshake that can be pointed at another ring."""
    servicer = RankerServicer(SimpleNamespace(rank=handler))
    return await start_server(
        {
            RANKER.full_name: lambda s: ranker_pb2_grpc.add_RankerServicer_to_server(servicer, s),
            transport_pb2.DESCRIPTOR.services_by_name["Transport"].full_name:
                lambda s: transport_pb2_grpc.add_TransportServicer_to_server(handshake, s),
        },
        "127.0.0.1:0",
    )


@asynccontextmanager
async def _service(handler, use_ring: bool = True) -> AsyncIterator[tuple[Transport, RingServer]]:
    """The handler behind gRPC and a ring, and a Transport to it; all torn down on exit."""
    ring = RingServer("ranker", RANKER, {"Rank": handler}, SMALL_RING, log_calls=False)
    ring.start()
    server = await _serve(handler, HandshakeServicer(ring))
    transport = Transport("ranker", f"127.0.0.1:{server.port}", RANKER, use_ring=use_ring, config=SMALL_RING)
    try:
        yield transport, ring
    finally:
        await transport.close()
        await server.stop(0)
        ring.stop()


class TestTransport:
    def test_calls_use_the_ring_and_tensors_come_back_as_slot_views(self, run) -> None:
        async def body() -> None:
            async with _service(Blocking()) as (transport, _):
                with await transport.call("Rank", ranker_pb2.RankRequest(k=5), None, timeout=5) as reply:
                    assert transport.path == "ring" and transport.calls == {"ring": 1, "grpc": 0, "failover": 0}
                    assert reply.message.candidates_considered == 5
                    np.testing.assert_array_equal(reply.tensors["scores"], np.arange(5))
                    address = reply.tensors["scores"].ctypes.data
                    mapping = transport._ring.ring
                    assert mapping.address <= address < mapping.address + mapping.size

        run(body())

    def test_forced_grpc_never_touches_the_ring(self, run) -> None:
        async def body() -> None:
            async with _service(Blocking(), use_ring=False) as (transport, ring):
                reply = await transport.call("Rank", ranker_pb2.RankRequest(k=2), None, timeout=5)
                assert transport.calls == {"ring": 0, "grpc": 1, "failover": 0}
                np.testing.assert_array_equal(reply.tensors["scores"], [0, 1])
                assert ring.served == 0

        run(body())

    def test_a_ring_that_closes_mid_call_fails_that_call_over_to_grpc_then_reattaches(self, run) -> None:
        """The server shuts its ring while a call waits: the call is answered over gRPC; a new ring is attached later."""
        handler = Blocking()
        first = RingServer("ranker", RANKER, {"Rank": handler}, SMALL_RING, log_calls=False)
        first.start()
        handshake = HandshakeServicer(first)
        second = None

        async def body() -> None:
            nonlocal second
            server = await _serve(handler, handshake)
            transport = Transport("ranker", f"127.0.0.1:{server.port}", RANKER, config=SMALL_RING, reattach_s=0)
            loop = asyncio.get_running_loop()
            try:
                pending = asyncio.ensure_future(transport.call("Rank", ranker_pb2.RankRequest(user_id=666, k=3), None, timeout=10))
                await loop.run_in_executor(None, handler.started.wait)
                first.ring.shutdown()
                reply = await pending
                assert not handler.release.is_set()  # answered while the closed ring still held the request
                assert reply.message.candidates_considered == 3 and transport.calls["failover"] == 1
                assert transport.path == "grpc"
                handler.release.set()
                second = RingServer("ranker", RANKER, {"Rank": handler}, SMALL_RING, log_calls=False)
                second.start()
                handshake.ring = second
                (await transport.call("Rank", ranker_pb2.RankRequest(k=1), None, timeout=5)).release()
                assert transport.path == "ring" and transport._ring.ring.name == second.segment
            finally:
                handler.release.set()
                await transport.close()
                await server.stop(0)

        try:
            run(body())
        finally:
            first.stop()
            if second is not None:
                second.stop()

    def test_a_full_ring_gives_resource_exhausted_at_the_deadline(self) -> None:
        """Every slot of the lane is in use: the next call waits, then RESOURCE_EXHAUSTED, never overwriting."""
        handler = Blocking()
        ring = RingServer("ranker", RANKER, {"Rank": handler}, SMALL_RING, log_calls=False)
        ring.start()
        channel = RingChannel("ranker", ring.segment, SMALL_RING)
        rank = methods_of(RANKER)["Rank"]
        blocked = threading.Thread(target=lambda: channel.call(rank, ranker_pb2.RankRequest(user_id=666, k=1), {}, 10).release())
        try:
            blocked.start()
            handler.started.wait(10)  # slot 1: in the server's hands
            held = channel.ring.claim(1.0)  # slot 2: claimed and kept
            with pytest.raises(ResourceExhausted, match="ring is full"):
                channel.call(rank, ranker_pb2.RankRequest(k=1), {}, 0.05)
            assert not handler.release.is_set()  # refused while both slots were still in use: nothing overwritten
            channel.ring.release(held)
            handler.release.set()
            blocked.join(10)
            with channel.call(rank, ranker_pb2.RankRequest(k=2), {}, 5) as reply:  # the slots came back
                assert reply.message.candidates_considered == 2
        finally:
            handler.release.set()
            blocked.join(10)
            channel.close()
            ring.stop()

    def test_a_corrupt_request_gets_an_error_reply_and_the_server_keeps_serving(self) -> None:
        """A slot whose header lies about a tensor gets INVALID_ARGUMENT naming it; the next call is served."""
        handler = Blocking()
        ring = RingServer("ranker", RANKER, {"Rank": handler}, SMALL_RING, log_calls=False)
        ring.start()
        channel = RingChannel("ranker", ring.segment, SMALL_RING)
        rank = methods_of(RANKER)["Rank"]
        try:
            raw = channel.ring
            slot = raw.claim(1.0)
            length = raw.encode(slot, False, rank.ident, 0, 1, 0, "", "", b"", [("candidates", 3, (4,), 1024)])
            area = raw.area_offset(slot, False)
            view = memoryview(raw)
            view[area + 256 + 40: area + 256 + 48] = (1 << 20).to_bytes(8, "little")  # shape[0]: 4 -> 1M
            view.release()
            response_len = raw.call(slot, length, 5.0)
            decoded = raw.decode(slot, True, response_len)
            status, (at, n) = decoded[1], decoded[6:8]
            detail = bytes(memoryview(raw)[at:at + n]).decode()
            raw.release(slot)
            assert status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert "tensor candidates" in detail and "shape" in detail
            with channel.call(rank, ranker_pb2.RankRequest(k=3), {}, 5) as reply:
                assert reply.message.candidates_considered == 3
            with pytest.raises(InvalidArgument, match="is not a tensor field"):
                channel.call(rank, ranker_pb2.RankRequest(k=1), {"bogus": np.zeros(2, np.float32)}, 5)
        finally:
            channel.close()
            ring.stop()


def _start_peer(port: int) -> tuple[subprocess.Popen, str]:
    """The peer process once it reports SERVING, and the segment its handshake names."""
    peer = subprocess.Popen([sys.executable, "-m", "tests.ring_peer", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "GRPC_VERBOSITY": "ERROR"})
    address = f"127.0.0.1:{port}"
    wait_serving(address, 30, peer)
    return peer, handshake_segment(address)


@pytest.mark.slow
def test_a_peer_killed_mid_request_fails_the_call_within_its_deadline_and_the_ring_is_reattached(run) -> None:
    """kill -9 the server while a call waits: UNAVAILABLE naming it long before the deadline; a restarted server's ring is used."""
    (port,) = free_ports(1)
    peer, segment = _start_peer(port)
    replacement = None

    async def body() -> None:
        nonlocal replacement
        transport = Transport("ranker", f"127.0.0.1:{port}", RANKER, reattach_s=0)
        loop = asyncio.get_running_loop()
        try:
            (await transport.call("Rank", ranker_pb2.RankRequest(k=1), None, timeout=5)).release()
            assert transport.path == "ring"
            pending = asyncio.ensure_future(transport.call("Rank", ranker_pb2.RankRequest(user_id=666, k=1), None, timeout=5))
            assert (await loop.run_in_executor(None, peer.stdout.readline)).strip() == "blocked"
            peer.send_signal(signal.SIGKILL)
            peer.wait()  # reaped, as a supervisor would: a zombie's pid still looks alive
            with pytest.raises(Unavailable, match="ranker"):  # UNAVAILABLE, not DEADLINE_EXCEEDED: found out early
                await pending
            assert transport.calls["failover"] == 1 and transport.path == "grpc"

            replacement, new_segment = await loop.run_in_executor(None, _start_peer, port)
            await asyncio.wait_for(transport.channel.channel_ready(), 20)
            with await transport.call("Rank", ranker_pb2.RankRequest(k=2), None, timeout=5) as reply:
                assert reply.message.candidates_considered == 2
            assert transport.path == "ring" and transport._ring.ring.name == new_segment != segment
        finally:
            await transport.close()

    try:
        run(body())
    finally:
        for process in (peer, replacement):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
            if process is not None:
                process.stdout.close()
    assert not os.path.exists(f"/dev/shm{segment}")  # the replacement's start-up removed the dead peer's segment


@pytest.mark.parametrize(("group", "mode"), [("", 0o600), ("1", 0o660)])
def test_a_ring_segment_is_private_to_its_user_unless_the_group_is_asked_for(monkeypatch, group: str, mode: int) -> None:
    """By default a segment is 0600 (no other user attaches); with FEEDSERVE_RING_GROUP=1 (colocated services as
    separate users of one group) it is 0660: the group may attach, others still not."""
    monkeypatch.setenv(RING_GROUP_ENV, group)
    ring = RingServer("ranker", RANKER, {"Rank": Blocking()}, SMALL_RING, log_calls=False)
    ring.start()
    try:
        assert (SHM_DIR / ring.segment.lstrip("/")).stat().st_mode & 0o777 == mode
    finally:
        ring.stop()
