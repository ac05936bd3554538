"""Model files by content: each file of a registered version is kept in the store under its SHA-256 (in chunks), so
that a service on any host can read a version it did not train. It reads the version's registered directory where
that holds the same manifest (the host that staged it, or a shared volume), else fetches the files by hash into a
local cache, checking each hash as it writes; a file whose bytes do not match is refused, named."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from catalog.registry import Version
from errors import FailedPrecondition, InvalidArgument, NotFound

__all__ = ["ARTIFACTS_DDL", "CHUNK_BYTES", "StoredArtifacts", "held_artifacts", "manifest_files", "version_directory"]

ARTIFACTS_DDL = """
CREATE TABLE IF NOT EXISTS artifacts (sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS artifact_chunks (sha256 TEXT NOT NULL, n INTEGER NOT NULL, body {blob} NOT NULL,
    PRIMARY KEY (sha256, n));
"""
CHUNK_BYTES = 4 << 20  # a row a connection holds at once, whatever the file's size


def manifest_files(text: str) -> dict[str, str]:
    """The files a manifest records (path under its directory -> SHA-256)."""
    try:
        files = json.loads(text).get("files", {})
    except (ValueError, AttributeError) as exc:
        raise InvalidArgument("directory", f"its manifest.json cannot be read: {exc}") from None
    return {str(name): str(digest) for name, digest in files.items()}


def held_artifacts(cur: Any, sql: Callable[[str], str], digests: set[str]) -> set[str]:
    """Those of `digests` the store holds, read within the caller's transaction."""
    marks = ", ".join("?" for _ in digests)
    cur.execute(sql(f"SELECT sha256 FROM artifacts WHERE sha256 IN ({marks})"), tuple(digests))
    return {str(row[0]) for row in cur.fetchall()}


class StoredArtifacts:
    """The store's artifact tables, as part of `Store`: the same connection and transactions."""

    _transaction: Callable[..., AbstractContextManager[Any]]
    _sql: Callable[[str], str]

    def missing_artifacts(self, digests: Iterable[str]) -> set[str]:
        """Those of `digests` the store does not hold."""
        wanted = set(digests)
        if not wanted:
            return set()
        with self._transaction(write=False) as cur:
            return wanted - held_artifacts(cur, self._sql, wanted)

    def upload_version(self, directory: Path) -> int:
        """Every file `directory`'s manifest records that the store does not hold yet, each checked against its
        recorded SHA-256 as it is read (a file that does not match is refused, named, and nothing of it is kept).
        Returns the bytes uploaded."""
        files = manifest_files((directory / "manifest.json").read_text())
        missing = self.missing_artifacts(files.values())
        sent = 0
        for name, digest in files.items():
            if digest in missing:
                sent += self._put(directory / name, name, digest)
                missing.discard(digest)
        return sent

    def _put(self, path: Path, name: str, digest: str) -> int:
        if not path.is_file():
            raise FailedPrecondition(f"{name} is missing from {path.parent}: its version cannot be registered")
        check, size, n = hashlib.sha256(), 0, 0
        # content-addressed rows no other writer changes: no need to queue behind the catalog's writers
        with self._transaction(serial=False) as cur, path.open("rb") as f:
            while block := f.read(CHUNK_BYTES):
                check.update(block)
                cur.execute(self._sql("INSERT INTO artifact_chunks (sha256, n, body) VALUES (?, ?, ?)"
                                      " ON CONFLICT (sha256, n) DO NOTHING"), (digest, n, block))
                size, n = size + len(block), n + 1
            if check.hexdigest() != digest:  # raising rolls the chunks back
                raise FailedPrecondition(f"{name} does not match its manifest (SHA-256 {check.hexdigest()[:16]}..., "
                                         f"recorded {digest[:16]}...): its version cannot be registered")
            cur.execute(self._sql("INSERT INTO artifacts (sha256, size, chunks) VALUES (?, ?, ?)"
                                  " ON CONFLICT (sha256) DO NOTHING"), (digest, size, n))
        return size

    def fetch_artifact(self, digest: str, target: Path, name: str) -> None:
        """Write the file stored under `digest` to `target`, one chunk at a time, checking its SHA-256; a file the
        store lacks is NOT_FOUND and one whose bytes do not match is refused, both naming `name`."""
        with self._transaction(write=False) as cur:
            cur.execute(self._sql("SELECT chunks FROM artifacts WHERE sha256 = ?"), (digest,))
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"model file {name} (SHA-256 {digest[:16]}...) is not in the store")
        check = hashlib.sha256()
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for n in range(int(row[0])):
                with self._transaction(write=False) as cur:
                    cur.execute(self._sql("SELECT body FROM artifact_chunks WHERE sha256 = ? AND n = ?"), (digest, n))
                    chunk = cur.fetchone()
                block = bytes(chunk[0]) if chunk is not None else b""
                check.update(block)
                out.write(block)
        if check.hexdigest() != digest:
            target.unlink()
            raise FailedPrecondition(f"model file {name} from the store does not match its SHA-256 "
                                     f"({check.hexdigest()[:16]}..., recorded {digest[:16]}...): refused")


def version_directory(store: StoredArtifacts, entry: Version, cache: Path) -> Path:
    """Where this host reads a registered version's files: its registered directory when that holds the same
    manifest (the host that staged it, or a shared volume; the loader checks every file's hash), else a directory
    under `cache` filled from the store by hash, once (a version registered before files were recorded is read
    from its directory only)."""
    directory = Path(entry.directory)
    manifest = directory / "manifest.json"
    if not entry.manifest or (manifest.is_file() and manifest.read_text() == entry.manifest):
        return directory
    key = hashlib.sha256(entry.manifest.encode()).hexdigest()[:16]
    target = cache / f"{entry.version.replace('/', '-')}-{key}"
    if (target / "manifest.json").is_file():  # filled before: the manifest is written last
        return target
    staging = cache / f".{target.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name, digest in manifest_files(entry.manifest).items():
            store.fetch_artifact(digest, staging / name, name)
        (staging / "manifest.json").write_text(entry.manifest)
        try:
            staging.rename(target)
        except OSError:  # another process of this host filled it meanwhile: theirs is the same
            if not (target / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
