"""Model files by content in the store (SQLite and PostgreSQL): uploaded once by SHA-256, fetched by another host
into its cache with every hash checked, refused and named when bytes do not match, and a version is registered
only once its files are there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from catalog import Store
from catalog.artifacts import CHUNK_BYTES, version_directory
from catalog.registry import Family, Registry
from errors import FailedPrecondition


def exported(root: Path, version: str = "1", size: int = CHUNK_BYTES + 1000) -> Path:
    """A version with a graph bigger than one chunk and a small file, its manifest recording both hashes."""
    directory = root / version
    (directory / "sub").mkdir(parents=True)
    files = {"decomposed.onnx": bytes(range(256)) * (size // 256) + version.encode(), "sub/table.npz": b"table " * 10}
    for name, body in files.items():
        (directory / name).write_bytes(body)
    (directory / "manifest.json").write_text(json.dumps({
        "name": "ranker-mlp", "version": version, "graphs": {"decomposed": "decomposed.onnx"},
        "extra": {"space": 1}, "files": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}}))
    return directory


def staged(store: Store, directory: Path) -> Registry:
    registry, _ = store.change_registry(lambda r: r.families.setdefault("ranker-mlp", Family("ranker-mlp")).stage(
        directory, 0, 1.0))
    return registry


def test_a_version_read_on_another_host_is_fetched_by_hash_byte_for_byte(tmp_path: Path, store: Store) -> None:
    """Uploaded once (a second upload sends nothing); a host without the staged directory gets every file into
    its cache, identical, and reads the cache on the next call; the host that staged it reads its own directory."""
    directory = exported(tmp_path / "host-a")
    assert store.upload_version(directory) > CHUNK_BYTES
    assert store.upload_version(directory) == 0
    entry = staged(store, directory).family("ranker-mlp").versions["1"]
    assert version_directory(store, entry, tmp_path / "cache-a") == directory
    moved = directory.rename(tmp_path / "elsewhere")  # as another host sees it: no such directory
    fetched = version_directory(store, entry, tmp_path / "cache-b")
    assert fetched.parent == tmp_path / "cache-b"
    for name in ("decomposed.onnx", "sub/table.npz", "manifest.json"):
        assert (fetched / name).read_bytes() == (moved / name).read_bytes()
    assert version_directory(store, entry, tmp_path / "cache-b") == fetched


def test_a_file_that_does_not_match_its_manifest_is_refused_at_upload_naming_it(tmp_path: Path, store: Store) -> None:
    directory = exported(tmp_path)
    (directory / "sub" / "table.npz").write_bytes(b"changed after export")
    with pytest.raises(FailedPrecondition, match="sub/table.npz does not match its manifest"):
        store.upload_version(directory)
    files = json.loads((directory / "manifest.json").read_text())["files"]
    assert store.missing_artifacts(files.values()) == {files["sub/table.npz"]}  # nothing of it was kept


def test_a_version_whose_files_are_not_in_the_store_is_not_registered(tmp_path: Path, store: Store) -> None:
    directory = exported(tmp_path)
    with pytest.raises(FailedPrecondition, match="decomposed.onnx is not in the store"):
        staged(store, directory)
    assert store.registry().families == {}


def test_bytes_that_changed_in_the_store_are_refused_when_fetched_naming_the_file(tmp_path: Path, store: Store) -> None:
    directory = exported(tmp_path / "host-a")
    store.upload_version(directory)
    entry = staged(store, directory).family("ranker-mlp").versions["1"]
    digest = json.loads(entry.manifest)["files"]["sub/table.npz"]
    with store._transaction() as cur:  # a damaged row, as a faulty disk or a hand edit would leave it
        cur.execute(store._sql("UPDATE artifact_chunks SET body = ? WHERE sha256 = ?"), (b"damaged", digest))
    directory.rename(tmp_path / "elsewhere")
    with pytest.raises(FailedPrecondition, match="sub/table.npz from the store does not match"):
        version_directory(store, entry, tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*/manifest.json"))  # nothing half-fetched is taken for the version


def test_registering_a_version_uploads_its_files_and_stages_it(tmp_path: Path, store: Store) -> None:
    """What `feedserve train --register` and StageModel do: files into the store, then the version in its family
    (the family's first version its primary, the next staged), with the reason."""
    first = store.register_version(exported(tmp_path, "1"), "trained by feedserve train")
    second = store.register_version(exported(tmp_path, "2"), "trained by feedserve train")
    assert (first.state, second.state) == ("primary", "staged")
    files = json.loads(second.manifest)["files"]
    assert store.missing_artifacts(files.values()) == set()
    family = store.registry().family("ranker-mlp")
    assert family.versions["2"].history[-1]["why"] == "trained by feedserve train"
