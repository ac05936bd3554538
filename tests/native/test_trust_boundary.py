"""The ring's trust boundary from Python: one private snapshot per decode, a layout checked once, reaping
that never steals a dispatcher's slot, and releases refused outside the caller's lane."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from native import MSG_DATA_OFFSET, MSG_MAX_TENSORS, MSG_NAME_MAX, Ring, segment_name

REWRITER = Path(__file__).with_name("ring_rewriter.py")
# fs_ring_header's immutable line (native/fs_ring.h): offsets of the fields a hostile peer rewrites
LANE_COUNT, SLOTS_PER_LANE, REQUEST_CAPACITY, RESPONSE_CAPACITY, SLOT_STRIDE, SLOTS_OFFSET = 8, 12, 16, 24, 32, 56


def _server(lanes: int = 2, slots: int = 2, capacity: int = 4096, ring_type: type = Ring) -> Ring:
    return ring_type.create(segment_name("test", os.urandom(3).hex()), lanes=lanes, slots_per_lane=slots,
                       request_capacity=capacity, response_capacity=capacity)


def decode_while_rewritten(cases: int, ring_type: type = Ring) -> tuple[int, int]:
    """Decode one slot at least `cases` times while another process rewrites its header; returns (accepted, rejected).

    Every accepted decode must look like a validated message: at most 8 tensors, at most 4 dimensions,
    names shorter than 32 bytes. `ring_type` lets the sanitized build (sanitized_binding.py) run it too."""
    server = _server(ring_type=ring_type)
    client = ring_type.attach(server.name)
    slot = client.claim(1.0)
    area = client.area_offset(slot, False)
    length = client.encode(slot, False, 1, 0, 7, 0, "00-trace", "feed", b"proto",
                           [("ids", 3, (4,), MSG_DATA_OFFSET), ("ctx", 1, (2, 2), MSG_DATA_OFFSET + 64)])
    peer = subprocess.Popen([sys.executable, str(REWRITER), server.name, str(area)], stdout=subprocess.PIPE, text=True)
    accepted = rejected = 0
    try:
        assert peer.stdout.readline().strip() == "racing"
        done = 0
        # at least `cases`, and on until both outcomes were seen (a descheduled peer only makes it longer)
        while done < cases or (not (accepted and rejected) and done < 50 * cases):
            done += 1
            try:
                decoded = server.decode(slot, False, length)
            except ValueError:
                rejected += 1
                continue
            accepted += 1
            tensors = decoded[8]
            assert len(tensors) <= MSG_MAX_TENSORS, f"decoded {len(tensors)} tensors"
            for name, _dtype, shape, _offset in tensors:
                assert len(name.encode()) < MSG_NAME_MAX, f"decoded an unterminated name {name!r}"
                assert len(shape) <= 4, f"decoded ndim {len(shape)}"
    finally:
        peer.kill()
        peer.wait()
        client.release(slot)
        client.close()
        server.close()
    return accepted, rejected


def test_decode_uses_one_snapshot_while_a_peer_rewrites_the_slot() -> None:
    """20,000 decodes racing a process that flips tensor_count, ndim and a name: every accepted decode is
    a validated message (before the fix, decode re-read the slot after validating it)."""
    accepted, rejected = decode_while_rewritten(20_000)
    assert accepted > 0 and rejected > 0  # the race was real: both outcomes happened


def test_attach_refuses_a_layout_that_wraps_around_64_bits() -> None:
    """slots_offset + lanes x slots x stride == size only modulo 2^64: attach says corrupt, maps nothing."""
    server = _server(lanes=1, slots=1, capacity=64)
    view = memoryview(server)
    try:
        size = server.size
        stride = 64 + 2 * (1 << 27)
        struct.pack_into("<QQQ", view, REQUEST_CAPACITY, 1 << 27, 1 << 27, stride)
        struct.pack_into("<Q", view, SLOTS_OFFSET, (size - stride) % (1 << 64))
        with pytest.raises(ValueError, match="corrupt shared state"):
            Ring.attach(server.name)
    finally:
        view.release()
        server.close()


def test_a_header_rewritten_after_attach_moves_nothing_the_client_computes() -> None:
    """The client keeps the layout it checked: capacities, slot count and areas ignore later rewrites."""
    server = _server(lanes=1, slots=1, capacity=64)
    client = Ring.attach(server.name)
    view = memoryview(server)
    try:
        area = client.area_offset(0, False)
        struct.pack_into("<II", view, LANE_COUNT, 64, 64)
        struct.pack_into("<QQ", view, REQUEST_CAPACITY, 256 << 20, 256 << 20)
        struct.pack_into("<Q", view, SLOTS_OFFSET, 1 << 40)
        assert (client.slot_count, client.request_capacity, client.response_capacity) == (1, 64, 64)
        assert client.area_offset(0, False) == area
        with pytest.raises(ValueError, match="out of range"):
            client.area_offset(1, False)
    finally:
        view.release()
        client.close()
        server.close()


def test_release_refuses_a_slot_outside_the_clients_lane_or_not_held() -> None:
    """A client frees only a slot of its own lane that it holds (claimed, or answered)."""
    server = _server(lanes=2, slots=2)
    client = Ring.attach(server.name)
    try:
        other_lane = 2 if client.lane == 0 else 0
        with pytest.raises(ValueError, match="not held by this client"):
            client.release(other_lane)
        slot = client.claim(1.0)
        with pytest.raises(ValueError, match="not held by this client"):
            client.release(slot ^ 1)  # a slot of our lane we never claimed
        client.release(slot)
    finally:
        client.close()
        server.close()


def test_reaping_a_dead_clients_lane_never_steals_the_slot_a_dispatcher_serves() -> None:
    """The client dies while the server computes its answer; reap() runs; complete() reports the client
    gone (False) instead of failing, and the slot is free again."""
    server = _server(lanes=1, slots=2)
    code = ("import sys; from native import Ring; c = Ring.attach(sys.argv[1]); s = c.claim(1.0);"
            "n = c.encode(s, False, 1, 0, 1, 0, '', '', b'x', []); c.call(s, n, 60.0)")
    client_process = subprocess.Popen([sys.executable, "-c", code, server.name])
    try:
        got = server.next(30.0)  # the dispatcher takes the request: the slot is BUSY
        assert got is not None
        slot, _ = got
        client_process.kill()  # the client dies waiting for its answer
        client_process.wait()
        assert server.reap() == 1
        assert server.complete(slot, 0) is False
        client = Ring.attach(server.name)  # the lane is free again, and so are both its slots
        assert {client.claim(1.0), client.claim(1.0)} == {0, 1}
        client.close()
    finally:
        server.close()


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="switching to another uid needs root; as a normal user the 0600 mode is checked in test_ring.py")
def test_another_uid_cannot_attach_a_ring() -> None:
    """The segment is 0600 and named for its owner's uid: a process of another uid is refused at open."""
    server = _server(lanes=1, slots=1, capacity=64)
    try:
        child = os.fork()
        if child == 0:  # the child drops to nobody, then tries the same attach a client would
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                Ring.attach(server.name)
                os._exit(1)  # attached: the trust boundary is open
            except PermissionError:
                os._exit(0)
            except BaseException:  # noqa: BLE001 - any other outcome fails the test, never the parent
                os._exit(2)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert f"-{os.getuid()}-" in server.name
    finally:
        server.close()
