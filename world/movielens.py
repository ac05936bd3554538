"""Importing real interaction logs in MovieLens style: one `user item rating timestamp` per line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["load_ratings"]

_SPLIT = re.compile(r"::|[\t,; ]+")


def load_ratings(path: Path, users: int, items: int) -> tuple[dict[str, np.ndarray], int]:
    """Logs in the simulator's format from a ratings file; returns (logs, rows dropped).

    Ratings map to objectives: click >= 3, like and dwell >= 4, share = 5. Ids outside the world
    (1..users, 1..items) are dropped and counted; unparseable lines raise ValueError naming the line.
    """
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#") or line.lower().startswith("user"):
                continue
            parts = _SPLIT.split(line)
            if len(parts) < 4:
                raise ValueError(f"{path}:{number}: expected 'user item rating timestamp', got {line!r}")
            try:
                rows.append((int(parts[0]), int(parts[1]), float(parts[2]), int(float(parts[3]))))
            except ValueError:
                raise ValueError(f"{path}:{number}: expected numbers, got {line!r}") from None
    data = np.array(rows, dtype=np.float64).reshape(-1, 4)
    keep = (data[:, 0] >= 1) & (data[:, 0] <= users) & (data[:, 1] >= 1) & (data[:, 1] <= items)
    data = data[keep][np.argsort(data[keep][:, 3], kind="stable")]
    rating = data[:, 2]
    stamps = data[:, 3].astype(np.int64)
    logs = {
        "user": data[:, 0].astype(np.int64),
        "item": data[:, 1].astype(np.int64),
        "timestamp": stamps,
        "hour": ((stamps // 3600) % 24).astype(np.int8),
        "device": np.zeros(len(data), np.int8),
        "surface": np.zeros(len(data), np.int8),
        "click": (rating >= 3).astype(np.int8),
        "like": (rating >= 4).astype(np.int8),
        "dwell": (rating >= 4).astype(np.int8),
        "share": (rating >= 5).astype(np.int8),
    }
    return logs, int((~keep).sum())
