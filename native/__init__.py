"""The C core behind one door: the shared-memory Ring (and, later, the cuckoo table)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from native._native import MSG_ALIGN, MSG_DATA_OFFSET, MSG_MAX_TENSORS, MSG_NAME_MAX, Ring

__all__ = [
    "Ring",
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
    """Unlink this user's feedserve segments whose owning process is dead; returns their names."""
    removed = []
    uid = os.getuid()
    for entry in shm_dir.iterdir() if shm_dir.is_dir() else ():
        match = _SEGMENT.match(entry.name)
        if match is None or int(match["uid"]) != uid or _alive(int(match["pid"])):
            continue
        try:
            entry.unlink()
            removed.append(entry.name)
        except FileNotFoundError:
            pass  # another process cleaned it first
    return removed
