"""`feedserve import`: real files through a real gateway's Catalog API into a real store; presets, bad rows, resume."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog import open_store, preset_schema
from catalog.importers import PRESETS, BadRow, plan_for, read_section
from cli.importing import checkpoint_path, run_import
from tests.stack import running_stack


def ml100k() -> Path | None:
    """MovieLens-100K as the recbole package ships it (read in place: its terms forbid a copy)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"
    return path if path.is_dir() else None


needs_ml100k = pytest.mark.skipif(ml100k() is None, reason="recbole is not installed (make setup installs it with --no-deps)")


@needs_ml100k
def test_recbole_ml100k_imports_every_row(catalog, manifest, tmp_path, run) -> None:
    """RecBole's ml-100k atomic files give 1,682 items, 943 users and 100,000 events, none skipped."""
    plan = PRESETS["recbole"](ml100k())

    async def body() -> None:
        store = open_store(tmp_path / "catalog.db")
        async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db"),
                                 schema=preset_schema("movielens")) as stack:
            report = await asyncio.to_thread(run_import, plan, f"127.0.0.1:{stack.ports['gateway']}",
                                             tmp_path / "checkpoint.json", 10_000, stream=io.StringIO())
        assert report.sent == {"items": 1682, "users": 943, "events": 100_000} and report.skipped == []
        assert store.counts() == {"items": 1682, "deleted_items": 0, "users": 943, "events": 100_000}
        assert report.sequence == store.sequence()
        toy_story = next(i for i in store.changes(0)[0] if i.external_id == "1")
        assert toy_story.categories == ["Animation", "Children's", "Comedy"]
        assert toy_story.attributes == {"release_year": "1995"}

    run(body())


def test_bad_rows_are_reported_by_line_and_an_import_resumes(catalog, manifest, tmp_path, run) -> None:
    """A row that cannot be parsed and a row the server refuses are reported with their line and skipped;
    running the same import again after the files grew sends only the new rows."""
    (tmp_path / "items.csv").write_text("sku,name,kind\na,Alpha,x|y\nb,Beta,y\n")
    events = tmp_path / "events.csv"
    events.write_text("who,what,stars,when\nu1,a,5,100\nu1,b,lots,101\nu2,zzz,4,102\nu2,b,1,103\n")
    plan = plan_for(None, None, {"items": tmp_path / "items.csv", "events": events},
                    {"items.id": "sku", "title": "name", "categories": "kind", "user": "who", "item": "what",
                     "value": "stars", "timestamp": "when"}, preset_schema("simulator"))
    checkpoint = checkpoint_path(tmp_path, plan)

    async def body() -> None:
        store = open_store(tmp_path / "catalog.db")
        async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db")) as stack:
            gateway = f"127.0.0.1:{stack.ports['gateway']}"
            first = await asyncio.to_thread(run_import, plan, gateway, checkpoint, 2, stream=io.StringIO())
            assert first.sent == {"items": 2, "users": 0, "events": 2}
            assert [s.split(": ", 1)[0] for s in first.skipped] == [f"{events}:3", f"{events}:4"]
            assert "stars" in first.skipped[0] and "unknown item 'zzz'" in first.skipped[1]
            with open(events, "a") as f:
                f.write("u3,a,4,104\nu3,b,3,105\n")
            second = await asyncio.to_thread(run_import, plan, gateway, checkpoint, 2, stream=io.StringIO())
            assert second.sent == {"items": 0, "users": 0, "events": 2}
            assert second.resumed_from[str(events.resolve())] == 5
        log = store.events()
        assert log["timestamp"].tolist() == [100, 103, 104, 105] and log["event"].tolist() == [3, 7, 3, 2]
        assert json.loads(checkpoint.read_text())[str(events.resolve())] == 7

    run(body())


class TestReaders:
    rows = [{"sku": "a", "name": "Alpha", "kind": "x|y"}, {"sku": "b", "name": "Beta", "kind": "y"}]
    mapping = {"id": "sku", "title": "name", "categories": "kind"}

    def _items(self, path: Path) -> list:
        plan = plan_for(None, None, {"items": path}, self.mapping, preset_schema("simulator"))
        return [record for _, record in read_section(plan.sections[0])]

    def test_csv_jsonl_and_parquet_read_the_same_items(self, tmp_path: Path) -> None:
        """The three formats, mapped the same way, give identical records."""
        (tmp_path / "i.csv").write_text("sku,name,kind\na,Alpha,x|y\nb,Beta,y\n")
        (tmp_path / "i.jsonl").write_text("\n".join(json.dumps(r) for r in self.rows) + "\n")
        pq.write_table(pa.Table.from_pylist(self.rows), tmp_path / "i.parquet")
        csv_items = self._items(tmp_path / "i.csv")
        assert csv_items == self._items(tmp_path / "i.jsonl") == self._items(tmp_path / "i.parquet")
        assert csv_items[0].categories == ["x", "y"]

    def test_a_broken_jsonl_line_is_a_bad_row_with_its_number(self, tmp_path: Path) -> None:
        """Malformed JSON on line 2 is reported as a bad row, and line 3 still reads."""
        (tmp_path / "i.jsonl").write_text('{"sku": "a"}\n{"sku": \n{"sku": "c"}\n')
        plan = plan_for(None, None, {"items": tmp_path / "i.jsonl"}, {"id": "sku"}, preset_schema("simulator"))
        got = list(read_section(plan.sections[0]))
        assert [line for line, _ in got] == [1, 2, 3] and isinstance(got[1][1], BadRow)

    def test_movielens_100k_layout_reads_genre_flags_and_years(self, tmp_path: Path) -> None:
        """u.item's 19 genre flags become categories, the title's year an attribute; u.data ratings become events."""
        flags = ["0"] * 19
        flags[3] = flags[5] = "1"  # Animation, Comedy
        (tmp_path / "u.item").write_bytes(("7|Caf\xe9 Story (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n").encode("latin-1"))
        (tmp_path / "u.data").write_text("1\t7\t5\t881250949\n")
        plan = PRESETS["movielens-100k"](tmp_path)
        item = next(r for _, r in read_section(plan.sections[0]))
        event = next(r for _, r in read_section(plan.sections[-1]))
        assert item.title == "Caf\xe9 Story (1995)" and item.categories == ["Animation", "Comedy"]
        assert item.attributes == {"release_year": "1995"} and item.published == 788918400
        assert (event.user, event.item, event.event, event.value) == ("1", "7", 3, 5.0)

    def test_movielens_csv_layout_reads_pipe_genres(self, tmp_path: Path) -> None:
        """movies.csv genres split on |, quoted titles keep their commas; ratings.csv gives rated events."""
        (tmp_path / "movies.csv").write_text('movieId,title,genres\n11,"American President, The (1995)",Comedy|Drama|Romance\n')
        (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n3,11,2.5,964982703\n")
        plan = PRESETS["movielens"](tmp_path)
        item = next(r for _, r in read_section(plan.sections[0]))
        event = next(r for _, r in read_section(plan.sections[1]))
        assert item.categories == ["Comedy", "Drama", "Romance"] and item.attributes == {"release_year": "1995"}
        assert event.event == 2 and event.value == 2.5 and event.timestamp == 964982703


def test_a_batch_larger_than_the_public_message_limit_is_split_and_every_row_arrives(catalog, manifest, tmp_path,
                                                                                      run) -> None:
    """200 items of 60 KB text each (12 MB in one batch of 200) reach a gateway that takes 4 MiB messages: the
    import cuts the batch into requests under the limit, in order, and the checkpoint ends on the last line."""
    body_text = "word " * 12_000
    rows = "".join(f"i{n},Item {n},{body_text}\n" for n in range(200))
    (tmp_path / "items.csv").write_text("sku,name,body\n" + rows)
    plan = plan_for(None, None, {"items": tmp_path / "items.csv"},
                    {"items.id": "sku", "title": "name", "text": "body"}, preset_schema("simulator"))
    checkpoint = checkpoint_path(tmp_path, plan)

    async def body() -> None:
        store = open_store(tmp_path / "catalog.db")
        async with running_stack(catalog, manifest, tmp_path, store=str(tmp_path / "catalog.db")) as stack:
            report = await asyncio.to_thread(run_import, plan, f"127.0.0.1:{stack.ports['gateway']}", checkpoint,
                                             200, stream=io.StringIO())
        assert report.sent["items"] == 200 and report.skipped == []
        assert store.counts()["items"] == 200
        assert json.loads(checkpoint.read_text())[str((tmp_path / "items.csv").resolve())] == 201

    run(body())
