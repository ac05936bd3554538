"""Store fixtures: every store test runs on SQLite and on a real PostgreSQL server started for the session."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog import Store, open_store
from tests.postgres import postgres_bindir, running_postgres

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    bindir, why = postgres_bindir()
    if bindir is None:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="feedserve-pg-"))  # not under pytest's 0700 tree: the server runs as postgres
    try:
        with running_postgres(root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    import psycopg

    server = request.getfixturevalue("postgres_server")
    name = f"catalog_{next(_databases)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()
