"""The C core behind one door: the shared-memory Ring and the CuckooTable of embeddings."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from native._native import MSG_ALIGN, MSG_DATA_OFFSET, MSG_MAX_TENSORS, MSG_NAME_MAX, Ring
from native._native import CuckooTable as _CuckooTable

__all__ = [
    "Ring",
    "CuckooTable",
    "UPDATED",
    "INSERTED",
    "PENDING",
    "MSG_ALIGN",
    "MSG_DATA_OFFSET",
    "MSG_MAX_TENSORS",
    "MSG_NAME_MAX",
    "segment_name",
    "remove_stale_segments",
]

SHM_DIR = Path("/dev/shm")
_SEGMENT = re.compile(r"^feedserve-(?P<service>[a-z0-9_]+)-(?P<uid>\d+)-(?P<pid>\d+)(?:-[a-z0-9]+)?$")


def segment_name(service: str, suffix: str = "") -> str:
    """`/feedserve-<service>-<uid>-<pid>[-suffix]`: whose segment it is, and who owns it."""
    if not re.fullmatch(r"[a-z0-9_]+", service) or not re.fullmatch(r"[a-z0-9]*", suffix):
        raise ValueError(f"service {service!r} and suffix {suffix!r} are expected in [a-z0-9_]")
    return f"/feedserve-{service}-{os.getuid()}-{os.getpid()}" + (f"-{suffix}" if suffix else "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_segments(shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink this user's feedserve segments whose owning process is dead; returns their names. A segment with
    this user's name but another owner (another local user can create any name in /dev/shm) is left alone, and
    a segment that cannot be removed is skipped: neither stops a service from starting."""
    removed = []
    uid = os.getuid()
    for entry in shm_dir.iterdir() if shm_dir.is_dir() else ():
        match = _SEGMENT.match(entry.name)
        if match is None or int(match["uid"]) != uid or _alive(int(match["pid"])):
            continue
        try:
            if entry.lstat().st_uid != uid:
                continue  # planted by someone else: not ours to remove, and not ours to trust
            entry.unlink()
            removed.append(entry.name)
        except FileNotFoundError:
            pass  # another process cleaned it first
        except OSError:
            continue  # sticky /dev/shm: a file we cannot remove is not ours
    return removed


UPDATED, INSERTED, PENDING = 0, 1, 2  # per-key outcomes of CuckooTable.upsert


def _keys(keys: np.ndarray) -> np.ndarray:
    keys = np.ascontiguousarray(keys)
    if keys.dtype == np.int64:
        return keys.view(np.uint64)  # same bits; callers validate keys > 0
    return np.ascontiguousarray(keys, dtype=np.uint64)


class CuckooTable(_CuckooTable):
    """uint64 keys to embedding rows (fp32, fp16, or int8 with a per-row scale). Each batch is one C call
    with the GIL released; readers share a lock, writers hold it alone, so no row is ever seen torn."""

    def lookup(self, keys: np.ndarray, now_s: int = 0, ttl_s: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows as float32 [n, dim] (zeros where missing) and a found mask; ttl_s > 0 hides stale rows."""
        keys = _keys(keys)
        out = np.empty((len(keys), self.dim), np.float32)
        found = np.empty(len(keys), np.uint8)
        self.lookup_into(keys, out, found, now_s, ttl_s)
        return out, found.view(bool)

    def upsert(self, keys: np.ndarray, values: np.ndarray, now_s: int = 0, admit: bool = True) -> np.ndarray:
        """Insert or overwrite; returns per-key UPDATED, INSERTED, or PENDING (not yet admitted).
        admit=False inserts at once (restoring a snapshot of keys that had already earned their rows)."""
        keys = _keys(keys)
        status = np.empty(len(keys), np.uint8)
        self.upsert_into(keys, np.ascontiguousarray(values, dtype=np.float32), status, now_s, admit)
        return status

    def drift(self, keys: np.ndarray, targets: np.ndarray, rates: np.ndarray, now_s: int = 0,
              commit: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Move each key's row toward its target by its rate and renormalise; returns (rows after, status:
        0 unchanged, 1 moved, 2 created from the target). commit=False plans: the same answer, nothing changed."""
        keys = _keys(keys)
        out = np.empty((len(keys), self.dim), np.float32)
        status = np.empty(len(keys), np.uint8)
        self.drift_into(keys, np.ascontiguousarray(targets, dtype=np.float32),
                        np.ascontiguousarray(rates, dtype=np.float32), out, status, now_s, commit)
        return out, status

    def remove(self, keys: np.ndarray) -> np.ndarray:
        """Remove keys and free their rows; returns a mask of the keys that were there."""
        keys = _keys(keys)
        removed = np.empty(len(keys), np.uint8)
        self.remove_into(keys, removed)
        return removed.view(bool)

    def items(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every key (int64), its float32 row and its last-update stamp: for snapshots."""
        size = self.size
        keys, rows, stamps = np.empty(size, np.uint64), np.empty((size, self.dim), np.float32), np.empty(size, np.uint32)
        n = self.export_into(keys, rows, stamps)
        return keys[:n].view(np.int64), rows[:n], stamps[:n]
