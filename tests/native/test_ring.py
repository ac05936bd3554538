"""native.Ring from Python: zero-copy views, GIL-free waits, segment naming, stale clean-up, hostile slots."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from native import MSG_DATA_OFFSET, Ring, remove_stale_segments, segment_name


@pytest.fixture
def pair():
    server = Ring.create(segment_name("test", f"{os.urandom(3).hex()}"), lanes=2, slots_per_lane=2,
                         request_capacity=8192, response_capacity=8192)
    client = Ring.attach(server.name)
    yield server, client
    client.close()
    server.close()


class TestSegment:
    def test_segment_is_private_and_named_for_service_uid_and_pid(self, pair) -> None:
        """/dev/shm/feedserve-<service>-<uid>-<pid>-..., mode 0600, owned by the server."""
        server, _ = pair
        assert server.name.startswith(f"/feedserve-test-{os.getuid()}-{os.getpid()}-")
        mode = (Path("/dev/shm") / server.name.lstrip("/")).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert server.server_pid == os.getpid()

    def test_close_unlinks_and_a_second_owner_is_refused(self) -> None:
        name = segment_name("test", "dup")
        ring = Ring.create(name, lanes=1, slots_per_lane=1, request_capacity=64, response_capacity=64)
        with pytest.raises(FileExistsError):
            Ring.create(name, lanes=1, slots_per_lane=1, request_capacity=64, response_capacity=64)
        ring.close()
        with pytest.raises(FileNotFoundError):
            Ring.attach(name)

    def test_stale_segments_of_dead_processes_are_removed(self) -> None:
        """A segment whose owner pid is gone is unlinked at start-up; live owners' segments stay."""
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead_pid = int(dead.stdout)
        stale = Path("/dev/shm") / f"feedserve-ranker-{os.getuid()}-{dead_pid}-abc"
        stale.write_bytes(b"")
        live = Ring.create(segment_name("test", "live"), lanes=1, slots_per_lane=1, request_capacity=64, response_capacity=64)
        try:
            removed = remove_stale_segments()
            assert stale.name in removed and not stale.exists()
            assert (Path("/dev/shm") / live.name.lstrip("/")).exists()
        finally:
            live.close()


    def test_a_planted_or_unremovable_segment_is_skipped_and_start_up_goes_on(self, tmp_path: Path) -> None:
        """Another local user can create /dev/shm/feedserve-<service>-<our uid>-<dead pid>: a segment that is not
        ours (another owner) stays, one that cannot be unlinked (here a directory) is skipped, no error rises,
        and a real stale segment beside them is still removed."""
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        prefix = f"feedserve-ranker-{os.getuid()}-{int(dead.stdout)}"
        unremovable = tmp_path / f"{prefix}-dir"
        unremovable.mkdir()
        stale = tmp_path / f"{prefix}-abc"
        stale.write_bytes(b"")
        planted = tmp_path / f"{prefix}-planted"
        planted.write_bytes(b"")
        if os.getuid() == 0:
            os.chown(planted, 65534, 65534)  # nobody's, as another user would leave it
        removed = remove_stale_segments(tmp_path)
        assert stale.name in removed and unremovable.exists()
        if os.getuid() == 0:
            assert planted.exists() and planted.name not in removed


class TestZeroCopy:
    def test_payload_views_alias_the_shared_segment(self, pair) -> None:
        """A numpy array over the client's mapping is seen by the server without any copy."""
        server, client = pair
        slot = client.claim(1.0)
        offset = client.area_offset(slot, False)
        written = np.frombuffer(memoryview(client), np.float32, 16, offset)
        written[:] = np.arange(16, dtype=np.float32)
        seen = np.frombuffer(memoryview(server), np.float32, 16, server.area_offset(slot, False))
        np.testing.assert_array_equal(seen, np.arange(16))
        assert client.address <= written.ctypes.data < client.address + client.size
        client.release(slot)

    def test_closing_with_live_views_keeps_the_mapping_until_they_go(self, pair) -> None:
        """close() never unmaps under a live view (no use-after-unmap); the view stays readable."""
        server, client = pair
        view = memoryview(client)
        client.close()
        assert len(bytes(view[:64])) == 64
        view.release()
        with pytest.raises(ValueError, match="closed"):
            client.claim(0.1)


class TestWaits:
    def test_waiting_for_a_request_releases_the_gil(self, pair) -> None:
        """While one thread is parked in next(), another runs Python code and then wakes it with a request."""
        server, client = pair
        parked, got = threading.Event(), []

        def serve() -> None:
            parked.set()
            got.append(server.next(10.0))

        thread = threading.Thread(target=serve)
        thread.start()
        parked.wait()
        total = sum(range(2_000_000))  # would not run until next() returned if it held the GIL
        assert thread.is_alive() and not got
        slot = client.claim(1.0)
        length = client.encode(slot, False, 0, 0, 1, 0, "", "", b"", [])
        waiter = threading.Thread(target=lambda: got.append(client.call(slot, length, 5.0)))
        waiter.start()
        thread.join(10)
        served_slot, served_len = got[0]
        assert served_slot == slot and served_len == length and total > 0
        server.complete(slot, server.encode(slot, True, 0, 0, 1, 0, "", "", b"ok", []))
        waiter.join(10)
        assert got[1] > 0
        client.release(slot)

    def test_full_lane_times_out_instead_of_overwriting(self, pair) -> None:
        """With every slot of the lane in use, claim waits and then raises TimeoutError."""
        _, client = pair
        held = [client.claim(1.0) for _ in range(2)]
        with pytest.raises(TimeoutError):
            client.claim(0.02)
        for slot in held:
            client.release(slot)


class TestHostileSlots:
    # the ring pair is meant to be shared: every example overwrites the same slot
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(min_size=1, max_size=2048), st.integers(0, 9000))
    def test_random_bytes_are_rejected_or_read_within_bounds(self, pair, data: bytes, length: int) -> None:
        """Any bytes in a slot: decode raises ValueError naming the problem, or returns offsets inside the slot."""
        server, client = pair
        slot = 0
        view = memoryview(client)
        area = client.area_offset(slot, False)
        view[area:area + len(data)] = data
        try:
            decoded = server.decode(slot, False, length)
        except ValueError as exc:
            assert str(exc)
        else:
            proto_at, proto_len, tensors = decoded[6], decoded[7], decoded[8]
            assert area <= proto_at and proto_at + proto_len <= area + length
            for _, _dtype, _shape, offset in tensors:
                assert area + MSG_DATA_OFFSET <= offset <= area + length
        finally:
            view.release()

    @pytest.mark.parametrize(
        "mutate, reason",
        [
            (lambda b: b.__setitem__(slice(0, 4), b"EVIL"), "magic"),
            (lambda b: b.__setitem__(slice(256 + 32, 256 + 33), b"\x63"), "dtype 99"),
            (lambda b: b.__setitem__(slice(256 + 40, 256 + 48), (5).to_bytes(8, "little")), "does not match its shape"),
            (lambda b: b.__setitem__(slice(256 + 72, 256 + 80), (1 << 40).to_bytes(8, "little")), "outside"),
        ],
    )
    def test_corrupt_header_fields_are_named(self, pair, mutate, reason: str) -> None:
        server, client = pair
        slot = client.claim(1.0)
        length = client.encode(slot, False, 1, 0, 9, 0, "", "tag", b"xyz", [("ids", 3, (4,), MSG_DATA_OFFSET)])
        area = client.area_offset(slot, False)
        view = memoryview(client)
        raw = bytearray(view[area:area + length])
        mutate(raw)
        view[area:area + length] = raw
        view.release()
        with pytest.raises(ValueError, match=reason):
            server.decode(slot, False, length)
        client.release(slot)
