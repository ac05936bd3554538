"""A version's manifest records the SHA-256 of every file it was written with; a version whose files do not match is
refused before it is served (the ranker, a generation tier, StageModel), naming the file."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import grpc
import pytest

from engines.base import ModelManifest, file_digests, load_manifest, verify_files, write_manifest
from errors import FailedPrecondition
from feedserve.v1 import gateway_pb2
from ranker.versions import ModelVersion
from tests.ranker.test_rollout import copy_version
from tests.stack import grpc_status, running_stack


def _flip(path: Path, at: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_manifest_records_every_file_but_itself_what_serving_derives_and_staging(tmp_path: Path) -> None:
    """Written files (one in a folder too) are recorded with their SHA-256; the manifest, TensorRT plans, the
    ranker's derived light stage and a hidden staging file are not."""
    for name, data in (("graph.onnx", b"graph"), ("tok/tokenizer.json", b"{}"), ("trt/g.plan", b"plan"),
                       ("derived/light-stage.npz", b"light"), (".staging-1", b"half")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    write_manifest(ModelManifest("m", "1", tmp_path, {"g": "graph.onnx"}))
    recorded = json.loads((tmp_path / "manifest.json").read_text())["files"]
    expected = {"graph.onnx": hashlib.sha256(b"graph").hexdigest(), "tok/tokenizer.json": hashlib.sha256(b"{}").hexdigest()}
    assert recorded == file_digests(tmp_path) == expected
    verify_files(load_manifest(tmp_path))


def test_a_changed_or_missing_file_is_refused_naming_it(manifest, tmp_path: Path) -> None:
    """A copy of the ranker's version loads; with one byte of its decomposed graph flipped, verify_files and
    ModelVersion refuse it with FAILED_PRECONDITION naming decomposed.onnx; with its transitions file gone, naming
    that file as missing."""
    copy = copy_version(manifest, tmp_path, "7")
    assert "decomposed.onnx" in copy.files
    verify_files(copy)
    _flip(copy.directory / "decomposed.onnx")
    with pytest.raises(FailedPrecondition, match=r"ranker-mlp/7: decomposed.onnx does not match its manifest"):
        ModelVersion(copy, "fp32", "cpu", 1)
    copy = copy_version(manifest, tmp_path, "8")
    (copy.directory / "transitions.npz").unlink()
    with pytest.raises(FailedPrecondition, match=r"transitions.npz is missing"):
        verify_files(copy)


def test_a_manifest_from_before_files_were_recorded_still_loads(manifest, tmp_path: Path) -> None:
    """A version exported by an older feedserve (no `files` in its manifest) is not checked, and loads."""
    copy = copy_version(manifest, tmp_path, "9")
    data = json.loads((copy.directory / "manifest.json").read_text())
    del data["files"]
    (copy.directory / "manifest.json").write_text(json.dumps(data))
    older = load_manifest(copy.directory)
    assert older.files == {}
    verify_files(older)
    ModelVersion(older, "fp32", "cpu", 1)


def test_staging_a_version_whose_files_changed_is_refused_and_changes_nothing(catalog, manifest, tmp_path) -> None:
    """StageModel of a version with a flipped byte in its item tower is FAILED_PRECONDITION naming item_tower.onnx,
    and the registry does not list it."""
    models = tmp_path / "models" / manifest.name
    first, second = copy_version(manifest, models, "1"), copy_version(manifest, models, "2")
    _flip(second.directory / "item_tower.onnx")

    async def body() -> None:
        async with running_stack(catalog, first, tmp_path, routing=True) as stack:
            code, details = await grpc_status(stack.admin.StageModel(
                gateway_pb2.StageModelRequest(directory=str(second.directory)), timeout=30))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "item_tower.onnx does not match" in details
            assert "2" not in stack.service.routing.store.registry().family(manifest.name).versions

    asyncio.run(body())
