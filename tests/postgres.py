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

__all__ = ["postgres_bindir", "running_postgres", "control"]


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


def _as_server(root: Path) -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def control(root: Path, action: str) -> None:
    """Stop or start (on its old port) a cluster that running_postgres made under `root`."""
    bindir, why = postgres_bindir()
    if bindir is None:
        raise RuntimeError(why)
    args = ["-m", "immediate"] if action == "stop" else ["-l", str(root / "log")]
    subprocess.run([*_as_server(root), str(bindir / "pg_ctl"), "-D", str(root / "data"), *args, "-w", action],
                   check=True, capture_output=True)


@contextmanager
def running_postgres(root: Path) -> Iterator[str]:
    """Start a throwaway cluster under `root`; yields a libpq URL for its `postgres` database."""
    bindir, why = postgres_bindir()
    if bindir is None:
        raise RuntimeError(why)
    data, sockets = root / "data", root / "sock"
    data.mkdir(parents=True)
    sockets.mkdir()
    prefix = _as_server(root)
    if prefix:  # initdb refuses to run as root: run the server as Debian's postgres user
        for path in (root, data, sockets):
            shutil.chown(path, "postgres")
    user = "postgres" if prefix else os.environ.get("USER", "postgres")
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "--no-sync"],
                   check=True, capture_output=True)
    port = _free_port()
    with open(data / "postgresql.conf", "a") as conf:  # kept for a restart by control()
        conf.write(f"\nport = {port}\nunix_socket_directories = '{sockets}'\nlisten_addresses = '127.0.0.1'\n")
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
