"""A real PostgreSQL server for tests: Debian's binaries, a cluster in a temporary directory, a free port, torn down after."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["postgres_bindir", "running_postgres"]


def postgres_bindir() -> tuple[Path | None, str]:
    """Where initdb and pg_ctl live, or None and why not (the Makefile's `postgresql` target installs them)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent, ""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(os.path.realpath(on_path)).parent, ""
    return None, "PostgreSQL is not installed (Debian package postgresql; `make test` installs it where apt works)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_postgres(root: Path) -> Iterator[str]:
    """Start a throwaway cluster under `root`; yields a libpq URL for its `postgres` database."""
    bindir, why = postgres_bindir()
    if bindir is None:
        raise RuntimeError(why)
    data, sockets = root / "data", root / "sock"
    data.mkdir(parents=True)
    sockets.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as Debian's postgres user
        shutil.chown(root, "postgres")
        for path in (data, sockets):
            shutil.chown(path, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    user = "postgres" if prefix else os.environ.get("USER", "postgres")
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "--no-sync"],
                   check=True, capture_output=True)
    port = _free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=on"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
