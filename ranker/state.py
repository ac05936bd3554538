"""The ranker's derived state on disk (items, their terms, users' attributes, seen items and history, the sequence applied),
so that a restarted ranker resumes the change feed where it stopped instead of reloading the whole catalog."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ranker.history import History
from ranker.items import ItemTable

__all__ = ["RankerState", "save_state", "load_state"]

_ARRAYS, _LISTS = ItemTable.ARRAYS, ItemTable.LISTS
FORMAT = 2  # 2: users' recent history


@dataclass
class RankerState:
    """What a ranker had derived from the catalog up to `sequence`, for one model version and schema."""

    sequence: int
    model: str
    schema: str
    terms: np.ndarray
    users: dict[int, dict]
    seen: dict[int, set[int]]
    history: History


def save_state(path: Path, items: ItemTable, state: RankerState) -> None:
    """Write atomically: a crash leaves the previous state whole. `items` and `state` must not change meanwhile
    (the ranker passes copies)."""
    path.mkdir(parents=True, exist_ok=True)
    n = items.size
    staging = path / f".state-{os.getpid()}.npz"
    with open(staging, "wb") as f:
        np.savez(f, sequence=np.array(state.sequence), terms=state.terms[:n],
                 **{name: getattr(items, name)[:n] for name in _ARRAYS})
        f.flush()
        os.fsync(f.fileno())
    meta = {"format": FORMAT, "sequence": state.sequence, "model": state.model, "schema": state.schema, "size": n,
            **{name: getattr(items, name)[:n] for name in _LISTS},
            "users": {str(k): v for k, v in state.users.items()}, "seen": {str(k): sorted(v) for k, v in state.seen.items()},
            "history": state.history.to_json()}
    meta_staging = path / f".state-{os.getpid()}.json"
    meta_staging.write_text(json.dumps(meta))
    os.replace(staging, path / "state.npz")
    os.replace(meta_staging, path / "state.json")  # last: it names the sequence the arrays reach


def load_state(path: Path, items: ItemTable, model: str, schema: str) -> RankerState | None:
    """Fill `items` from a saved state for this model and schema; None (and `items` untouched) when there is none,
    it is for another model or schema, or it is unreadable."""
    try:
        meta = json.loads((path / "state.json").read_text())
        if meta.get("format") != FORMAT or meta["model"] != model or meta["schema"] != schema:
            return None
        with np.load(path / "state.npz") as saved:
            n = int(meta["size"])
            if int(saved["sequence"]) != int(meta["sequence"]) or len(saved["vectors"]) != n:
                return None  # arrays and meta from two different saves: a crash between the two renames
            items._grow(n)
            for name in _ARRAYS:
                getattr(items, name)[:n] = saved[name]
            terms = saved["terms"].copy()
    except (OSError, ValueError, KeyError):
        return None
    for name in _LISTS:
        values = meta[name]
        getattr(items, name)[:n] = [tuple(v) for v in values] if name == "labels" else values
    items.size = n
    return RankerState(int(meta["sequence"]), model, schema, terms, {int(k): v for k, v in meta["users"].items()},
                       {int(k): set(v) for k, v in meta["seen"].items()}, History.from_json(meta["history"]))
