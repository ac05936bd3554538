"""The CLI ends like a well-kept one: quietly when its reader goes away, with 0 after SIGTERM and 130 after Ctrl-C,
and never with a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.keys import KeyStore


def _cli(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRPC_VERBOSITY": "ERROR"}
    return subprocess.Popen([sys.executable, "-m", "cli", *args], env=env, text=True, **popen)


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """`feedserve keys list | head -1`: the reader closes after one line; the CLI exits 0 with no traceback."""
    keys = KeyStore(tmp_path / "catalog.db")  # the store `feedserve keys` reads by default
    for n in range(1_500):  # ~150 KB of listing: more than a pipe holds
        keys.create(f"tenant-{n}", label="x" * 40)
    keys.close()
    listing = _cli("keys", "list", "--home", str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert listing.stdout.readline().startswith("key id")
    listing.stdout.close()  # as `head -1` does
    _, errors = listing.communicate(timeout=60)
    assert listing.returncode == 0 and "Traceback" not in errors and "BrokenPipe" not in errors, errors


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_a_signal_stops_a_waiting_command_cleanly(sent: signal.Signals, code: int, tmp_path: Path) -> None:
    """A command waiting on a server that never answers (health, here) stops on Ctrl-C with 130 and on SIGTERM with
    0, without a traceback. The signal is sent once the command has connected, so it is inside its call. The silent
    server listens on a Unix socket of this test's own (a TCP port could be reached first by another process's
    retrying client, and the signal would then land before the command is running), and opens HTTP/2 without
    ever answering."""
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        silent.listen(1)
        silent.settimeout(60)
        # as at a terminal, where Ctrl-C is not ignored: a job started in the background by a script inherits
        # SIGINT ignored, and Python then leaves it ignored
        at_a_terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                         "runpy.run_module('cli', run_name='__main__', alter_sys=True)")
        waiting = subprocess.Popen([sys.executable, "-c", at_a_terminal, "health", f"unix:{path}", "--plaintext",
                                    "--timeout", "120"], env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        connection, _ = silent.accept()  # only the command knows this path: it is in its call now
        with connection:
            # an empty HTTP/2 SETTINGS frame: the connection is up and the call waits for an answer that never
            # comes (without it, gRPC gives the connection up after 20 s, and a slow machine can get there first)
            connection.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            waiting.send_signal(sent)
            out, errors = waiting.communicate(timeout=60)
    assert waiting.returncode == code, (out, errors)
    assert "Traceback" not in errors, errors


def test_keys_list_prints_json_without_secrets(tmp_path: Path) -> None:
    """`feedserve keys list --json`: one object per live key (id, tenant, role, label, times), and no token."""
    import json

    keys = KeyStore(tmp_path / "catalog.db")  # the store `feedserve keys` reads by default
    _, token = keys.create("acme", label="web")
    keys.create("globex", "admin")
    keys.close()
    listing = _cli("keys", "list", "--json", "--home", str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, errors = listing.communicate(timeout=60)
    assert listing.returncode == 0, errors
    rows = json.loads(out)
    assert [(r["tenant"], r["role"], r["label"]) for r in rows] == [("acme", "write", "web"), ("globex", "admin", "")]
    assert token not in out and token.split("_", 2)[2] not in out  # fsk_<id>_<secret>: the secret may hold "_"
