"""`feedserve import`: a product's files sent through the Catalog API in batches, with progress, bad rows reported
and skipped, and a checkpoint after every acknowledged batch so that an interrupted import resumes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc

from catalog.importers import BadRow, ImportPlan, Section, read_section, rows
from catalog.records import Event, Item, User
from cli.access import gateway_channel
from feedserve.v1 import catalog_pb2, catalog_pb2_grpc
from mesh.grpc_server import PUBLIC_MAX_MESSAGE_BYTES
from mesh.progress import Progress

__all__ = ["ImportReport", "run_import", "checkpoint_path"]

_ROW = re.compile(r"^(items|users|events)\[(\d+)\]")
_RPC = {"items": "UpsertItems", "users": "UpsertUsers", "events": "InteractBatch"}
REQUEST_BYTES = PUBLIC_MAX_MESSAGE_BYTES * 3 // 4  # a request is cut below the public port's limit


@dataclass
class ImportReport:
    """Rows sent and acknowledged per kind, rows skipped (with their reasons), and the last sequence acknowledged."""

    sent: dict[str, int] = field(default_factory=lambda: {"items": 0, "users": 0, "events": 0})
    skipped: list[str] = field(default_factory=list)
    sequence: int = 0
    resumed_from: dict[str, int] = field(default_factory=dict)


def _attribute(value: object) -> catalog_pb2.AttributeValue:
    if isinstance(value, list):
        return catalog_pb2.AttributeValue(list=catalog_pb2.StringList(values=value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return catalog_pb2.AttributeValue(number=float(value))
    return catalog_pb2.AttributeValue(text=str(value))


def _request(kind: str, records: list, drift: bool):
    if kind == "items":
        return catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.CatalogItem(
            id=r.external_id, title=r.title, text=r.text, categories=r.categories, tags=r.tags, published=r.published,
            attributes={k: _attribute(v) for k, v in r.attributes.items()}, hidden=r.hidden) for r in records])
    if kind == "users":
        return catalog_pb2.UpsertUsersRequest(users=[catalog_pb2.CatalogUser(
            id=r.external_id, attributes={k: _attribute(v) for k, v in r.attributes.items()}) for r in records])
    events = []
    for r in records:
        event = catalog_pb2.CatalogEvent(user=r.user, item=r.item, event=r.event, timestamp=r.timestamp)
        if not math.isnan(r.value):
            event.value = r.value
        events.append(event)
    return catalog_pb2.InteractBatchRequest(events=events, drift=drift)


def checkpoint_path(home: Path, plan: ImportPlan) -> Path:
    """One checkpoint per set of input files (by their absolute paths)."""
    key = hashlib.sha256("\n".join(str(s.path.resolve()) for s in plan.sections).encode()).hexdigest()[:16]
    return home / "imports" / f"{key}.json"


def _count_rows(section: Section) -> int:
    """Data rows in a file, for the progress bar (Parquet: from its footer; text: lines less the header)."""
    if section.path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(section.path).metadata.num_rows
    with open(section.path, "rb") as f:
        lines = sum(1 for line in f if line.strip())
    return lines - (1 if section.header is None and section.path.suffix.lower() not in (".jsonl", ".ndjson") else 0)


def _batches(section: Section, after_line: int, size: int, report: ImportReport,
             errors: TextIO) -> Iterator[tuple[list[int], list[Item | User | Event], int]]:
    """(lines, records, rows consumed including bad ones) per batch, skipping lines up to `after_line`."""
    lines: list[int] = []
    records: list = []
    consumed = 0
    for line, record in read_section(section):
        if line <= after_line:
            continue
        consumed += 1
        if isinstance(record, BadRow):
            _skip(report, errors, f"{section.path}:{line}: {record.reason}")
            continue
        lines.append(line)
        records.append(record)
        if len(records) == size:
            yield lines, records, consumed
            lines, records, consumed = [], [], 0
    if records or consumed:
        yield lines, records, consumed


def _fitting(kind: str, lines: list[int], records: list, drift: bool) -> Iterator[tuple[list[int], list]]:
    """The batch in parts whose requests fit the gateway's public message limit (4 MiB unless its operator says
    otherwise), with a margin: halved until each fits (a row is at most 64 KiB of text, so one always does)."""
    if not records:
        return
    if len(records) > 1 and _request(kind, records, drift).ByteSize() > REQUEST_BYTES:
        half = len(records) // 2
        yield from _fitting(kind, lines[:half], records[:half], drift)
        yield from _fitting(kind, lines[half:], records[half:], drift)
        return
    yield lines, records


def _skip(report: ImportReport, errors: TextIO, message: str) -> None:
    report.skipped.append(message)
    print(f"skipped {message}", file=errors)


def _send(stub: catalog_pb2_grpc.CatalogStub, section: Section, lines: list[int], records: list, drift: bool,
          timeout: float, report: ImportReport, errors: TextIO) -> None:
    """Send one batch; a row the server refuses (INVALID_ARGUMENT or NOT_FOUND naming it) is reported and dropped,
    and the rest is sent again. Any other failure stops the import: the checkpoint keeps what was acknowledged."""
    while records:
        try:
            ack = getattr(stub, _RPC[section.kind])(_request(section.kind, records, drift), timeout=timeout)
        except grpc.RpcError as error:
            found = _ROW.match(error.details() or "")
            if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND) and found:
                row = int(found.group(2))
                _skip(report, errors, f"{section.path}:{lines[row]}: {error.details()}")
                del lines[row], records[row]
                continue
            raise
        report.sent[section.kind] += len(records)
        report.sequence = max(report.sequence, ack.sequence)
        return


def run_import(plan: ImportPlan, gateway: str, checkpoint: Path, batch: int = 5_000, drift: bool = False,
               restart: bool = False, timeout: float = 120.0, stream: TextIO | None = None, key: str = "") -> ImportReport:
    """Import every section of `plan`, in order, resuming after the last acknowledged batch unless `restart`."""
    stream = stream if stream is not None else sys.stderr
    done: dict[str, int] = {}
    if checkpoint.exists() and not restart:
        done = json.loads(checkpoint.read_text())
    report = ImportReport(resumed_from={k: v for k, v in done.items() if v})
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    with gateway_channel(gateway, key) as channel:
        stub = catalog_pb2_grpc.CatalogStub(channel)
        for section in plan.sections:
            key = str(section.path.resolve())
            after = done.get(key, 0)
            total = _count_rows(section)
            progress = Progress(f"importing {section.kind} from {section.path.name}", total=total, stream=stream)
            if after:
                progress.advance(sum(1 for line, _ in rows(section.path, section.delimiter, section.header, section.encoding)
                                     if line <= after), note="resumed")
            for lines, records, consumed in _batches(section, after, batch, report, stream):
                for part_lines, part in _fitting(section.kind, lines, records, drift):
                    _send(stub, section, part_lines, part, drift, timeout, report, stream)
                    done[key] = part_lines[-1] if part_lines else done.get(key, 0)
                    _save(checkpoint, done)
                progress.advance(consumed, note=f"{report.sent[section.kind]:,} sent")
            if progress.done < progress.total:
                progress.advance(progress.total - progress.done)
    return report


def _save(path: Path, done: dict[str, int]) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(done))
    os.replace(staging, path)  # a checkpoint is whole or the previous one
