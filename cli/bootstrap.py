"""`feedserve up` on an empty store: the data comes in through the Catalog API like anyone's, its content is encoded,
the first vectors and ranker are learned from it; and the newest model's space is published, with users' vectors
seeded, before ranking starts."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import numpy as np

from catalog import Schema, Store, load_schema, preset_schema
from catalog.importers import PRESETS as IMPORT_PRESETS
from catalog.importers import ImportPlan, plan_for
from catalog.schema import PRESETS as SCHEMA_PRESETS
from cli.importing import checkpoint_path, run_import
from cli.stack import Stack
from engines import ModelManifest
from engines.sentence import DIM
from feedserve.v1 import paramserver_pb2, paramserver_pb2_grpc
from learning.pipeline import fit_and_export
from learning.training import MODEL_NAME, current_user_vectors, load_catalog, newest_model
from learning.vectors import AlsParams
from mesh.progress import Progress, working
from mesh.security import open_channel
from mesh.tensors import to_tensor
from world import WorldSpec, ensure_world
from world.export import IMPORT_MAPPING, export_world

__all__ = ["source", "load_schema_arg", "bootstrap", "detect_preset", "activate", "seed_users", "upsert_users"]

_SEED_BATCH = 10_000
FIRST_RUN_ALS = AlsParams(64, 10.0, 5.0)  # what the quick grid chose on MovieLens-100K


def load_schema_arg(name: str) -> Schema:
    return preset_schema(name) if name in SCHEMA_PRESETS else load_schema(Path(name))


def detect_preset(directory: Path) -> str:
    """Which import preset a directory's files fit: RecBole atomic files, ml-100k's u.data, or ratings.csv."""
    if any(directory.glob("*.inter")):
        return "recbole"
    if (directory / "u.data").exists():
        return "movielens-100k"
    if (directory / "ratings.csv").exists():
        return "movielens"
    raise FileNotFoundError(f"{directory}: no files of a known layout (*.inter, u.data, ratings.csv); "
                            f"use `feedserve import` with --map for other layouts")


def source(args: argparse.Namespace) -> tuple[ImportPlan, str]:
    """The data a first run imports, and its schema: `--data DIR` (a preset's layout), else the simulator's files."""
    if args.data is not None:
        preset = args.preset or detect_preset(args.data)
        plan = IMPORT_PRESETS[preset](args.data)
        return plan, args.schema or plan.schema
    world = ensure_world(WorldSpec(items=args.items, users=args.users, interactions=args.interactions), args.home)
    paths = export_world(world, args.home / "import" / world.path.name)
    schema = args.schema or "simulator"
    return plan_for(None, None, paths, IMPORT_MAPPING, load_schema_arg(schema)), schema


def _wait_encoded(store: Store, stream: TextIO, timeout_s: float = 1_800.0) -> None:
    """Until every item has its content vector (the gateway encodes in the background), with progress."""
    total = store.pending_count()
    if not total:
        return
    progress = Progress(f"encoding content of {total:,} items", total, stream=stream)
    deadline = time.monotonic() + timeout_s
    while (left := store.pending_count()) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{left:,} items still wait for content vectors after {timeout_s:.0f} s: see the gateway's log")
        progress.advance(total - left - progress.done, note=f"{left:,} to go")
        time.sleep(0.5)  # polling the store for the foreground CLI's progress bar, not test synchronisation
    progress.advance(total - progress.done)


def activate(store: Store, schema: Schema, manifest: ModelManifest, paramserver: str, stream: TextIO,
             published: Callable[[], None] | None = None) -> int:
    """Serve a model's learned space: publish it in the store (items' served vectors move to it through the change
    feed) and seed every user's vector in it into the paramserver (learned, then moved by the events logged since
    training). `published` runs between the two (`up` starts the ranker there: it loads the catalog while the users
    are seeded). Returns how many users were seeded; nothing to do when the space is already served."""
    space = int(manifest.extra.get("space", 0))
    if space == store.active_space():
        return 0
    with working(f"publishing learned space {space} of {manifest.name}/{manifest.version}", stream):
        store.publish_space(space)
    if published is not None:
        published()
    return seed_users(store, schema, paramserver, stream)


def seed_users(store: Store, schema: Schema, paramserver: str, stream: TextIO) -> int:
    """Every user's vector in the served space, upserted into the paramserver."""
    with working("every user's vector now: learned, then moved by the events since", stream):
        ids, vectors = current_user_vectors(store, load_catalog(store, schema, DIM))
    return upsert_users(paramserver, ids, vectors, stream)


def upsert_users(paramserver: str, ids: np.ndarray, vectors: np.ndarray, stream: TextIO | None = None) -> int:
    """Users' vectors into the paramserver's user table, in batches (with progress on `stream`)."""
    if not len(ids):
        return 0
    batches = -(-len(ids) // _SEED_BATCH)
    progress = Progress(f"seeding {len(ids):,} user vectors", batches, stream=stream) if stream is not None else None
    with open_channel(paramserver, options=[("grpc.max_send_message_length", 256 << 20)], service="paramserver") as channel:
        stub = paramserver_pb2_grpc.ParamServerStub(channel)
        for start in range(0, len(ids), _SEED_BATCH):
            part = slice(start, start + _SEED_BATCH)
            stub.Upsert(paramserver_pb2.UpsertRequest(table=paramserver_pb2.TABLE_USER, keys=to_tensor(ids[part]),
                                                      values=to_tensor(vectors[part])), timeout=60)
            if progress is not None:
                progress.advance()
    return len(ids)


def bootstrap(stack: Stack, store: Store, args: argparse.Namespace, plan: ImportPlan, schema_name: str,
              stream: TextIO = sys.stderr, published: Callable[[], None] | None = None) -> ModelManifest:
    """Bring an empty (or model-less) store to a served state: import, encode, train, seed. Idempotent: each step
    skips what is already done (an interrupted import resumes from its checkpoint)."""
    schema = load_schema_arg(schema_name)
    if store.sequence() == 0 or checkpoint_path(args.home, plan).exists():
        report = run_import(plan, stack.config.gateway_address, checkpoint_path(args.home, plan), stream=stream,
                            key=stack.api_key)
        print(f"imported {report.sent['items']:,} items, {report.sent['users']:,} users, {report.sent['events']:,} events"
              f" ({len(report.skipped)} bad rows skipped)", file=stream)
        checkpoint_path(args.home, plan).unlink(missing_ok=True)
    _wait_encoded(store, stream)
    root = args.home / "models" / MODEL_NAME
    manifest = newest_model(root)
    if manifest is None or "space" not in manifest.extra:
        # the first run serves at once: one ALS setting, no evaluation (on the default world both would take half
        # an hour on 2 cores), one pass over the ranker's examples (16 negatives each: as many rows as four passes
        # had with 4); `feedserve train` tunes, evaluates against the baselines and refuses a worse model
        manifest = fit_and_export(store, schema, root, DIM, grid=[FIRST_RUN_ALS], epochs=1, stream=stream,
                                  require_better=False, evaluate=False)
        print(f"model {manifest.name}/{manifest.version} trained (not yet evaluated: `feedserve train` tunes it and "
              f"measures it against the baselines on a per-user split)", file=stream)
    activate(store, schema, manifest, stack.config.paramserver_address, stream, published)
    return manifest
