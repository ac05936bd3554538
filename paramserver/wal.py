"""The write-ahead log: every update is appended (and, by policy, fsynced) before it is acknowledged.

Records: a 17-byte header `<length u32, crc32 u32, seq u64, op u8>` then the payload. Segments are
`wal-<first seq>.log`; a snapshot at seq S lets every segment that ends at or before S be deleted.
A torn tail (short record or bad checksum, as a crash mid-write leaves) ends replay and is cut off.

Policies (`--fsync`):
- always: group commit. A writer waits until an fsync covers its record; one fsync serves every
  writer queued behind it, optionally after waiting `interval` for more. Nothing acknowledged is lost,
  even on power failure.
- interval: acknowledge after write(2); a background thread fsyncs every `interval`. A crashed
  process loses nothing (the page cache survives it); power loss can lose the last `interval`.
- never: acknowledge after write(2) and let the kernel flush. Power loss can lose an unbounded tail.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["WriteAheadLog", "POLICIES"]

POLICIES = ("always", "interval", "never")
_HEADER = struct.Struct("<IIQB")


class WriteAheadLog:
    def __init__(self, directory: Path, policy: str = "always", interval_s: float = 0.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"fsync policy is expected to be one of {POLICIES}, got {policy!r}")
        self.directory, self.policy, self.interval_s = directory, policy, interval_s
        directory.mkdir(parents=True, exist_ok=True)
        self.last_seq = self._recover_tail()
        self._fd = os.open(self._segment(self.last_seq + 1), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()
        self._durable = threading.Condition(self._lock)
        self.synced_seq = self.last_seq
        self.appended_bytes = self.synced_bytes = 0
        self.last_sync = time.monotonic()
        self._syncing = False
        self._closed = False
        self._flusher = None
        if policy == "interval":
            self._flusher = threading.Thread(target=self._flush_every, name="wal-flusher", daemon=True)
            self._flusher.start()

    def _segment(self, first_seq: int) -> Path:
        return self.directory / f"wal-{first_seq:020d}.log"

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("wal-*.log"))

    def _recover_tail(self) -> int:
        """The last good seq on disk; a torn record at the end of the newest segment is truncated."""
        last = 0
        for path in self.segments():
            for seq, _, _, _end in self._records(path):
                last = seq
            size = path.stat().st_size
            good_end = max((end for *_, end in self._records(path)), default=0)
            if good_end < size:
                with open(path, "r+b") as f:
                    f.truncate(good_end)
        if last == 0 and self.segments():
            last = int(self.segments()[-1].stem.split("-")[1]) - 1
        return last

    @staticmethod
    def _records(path: Path) -> Iterator[tuple[int, int, bytes, int]]:
        data = path.read_bytes()
        at = 0
        while at + _HEADER.size <= len(data):
            length, crc, seq, op = _HEADER.unpack_from(data, at)
            start, end = at + _HEADER.size, at + _HEADER.size + length
            if end > len(data) or zlib.crc32(data[start:end]) != crc:
                return  # torn or corrupt: everything after is untrusted
            yield seq, op, data[start:end], end
            at = end

    def replay(self, after_seq: int) -> Iterator[tuple[int, int, bytes]]:
        """Records with seq > after_seq, in order."""
        for path in self.segments():
            for seq, op, payload, _ in self._records(path):
                if seq > after_seq:
                    yield seq, op, payload

    def append(self, op: int, payload: bytes) -> int:
        """Write one record (not yet durable under 'always'); returns its seq. Callers serialise appends."""
        with self._lock:
            self.last_seq += 1
            record = _HEADER.pack(len(payload), zlib.crc32(payload), self.last_seq, op) + payload
            os.write(self._fd, record)
            self.appended_bytes += len(record)
            return self.last_seq

    def wait_durable(self, seq: int) -> None:
        """Return once record `seq` may be acknowledged under the policy."""
        if self.policy != "always":
            return
        with self._lock:
            while self.synced_seq < seq:
                if self._syncing:
                    self._durable.wait()
                    continue
                self._syncing = True  # this writer leads the next group commit
                self._lock.release()
                try:
                    if self.interval_s:
                        time.sleep(self.interval_s)  # gather more writers into this fsync
                    with self._lock:
                        target, target_bytes, fd = self.last_seq, self.appended_bytes, self._fd
                    os.fsync(fd)
                finally:
                    self._lock.acquire()
                    self._syncing = False
                self.synced_seq = max(self.synced_seq, target)
                self.synced_bytes = max(self.synced_bytes, target_bytes)
                self.last_sync = time.monotonic()
                self._durable.notify_all()

    def _flush_every(self) -> None:
        while not self._closed:
            time.sleep(self.interval_s or 0.01)  # the flusher's period, by policy
            with self._lock:
                target, target_bytes, fd = self.last_seq, self.appended_bytes, self._fd
            if target > self.synced_seq:
                os.fsync(fd)
                self.synced_seq, self.synced_bytes, self.last_sync = target, target_bytes, time.monotonic()

    def lag(self) -> tuple[int, float]:
        """Bytes written but not yet fsynced, and seconds since the last fsync."""
        return self.appended_bytes - self.synced_bytes, time.monotonic() - self.last_sync

    def truncate_through(self, seq: int) -> int:
        """After a snapshot at `seq`: start a new segment and delete those holding only records <= seq."""
        with self._lock:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = os.open(self._segment(self.last_seq + 1), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self.synced_seq = self.last_seq
            self.synced_bytes = self.appended_bytes
        removed = 0
        segments = self.segments()
        for path, following in zip(segments, segments[1:]):
            if int(following.stem.split("-")[1]) - 1 <= seq:
                path.unlink()
                removed += 1
        return removed

    def close(self) -> None:
        self._closed = True
        with self._lock:
            os.fsync(self._fd)
            os.close(self._fd)
