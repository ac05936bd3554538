"""Secrets stay out of logs and argv: the store's password is redacted, its URL reaches services through the
environment, and the admin key is printed only to a terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

from catalog.store import STORE_ENV, redact
from cli.access import SECRETS_ENV, admin_key_path
from cli.security import stack_security
from cli.stack import Stack, free_ports
from mesh.config import StackConfig
from mesh.security import configure


def test_a_store_url_is_printed_without_its_password() -> None:
    assert redact("postgresql://feed:s3cret@db.internal:5432/feedserve") == \
        "postgresql://feed:***@db.internal:5432/feedserve"
    assert redact("/data/catalog.db") == "/data/catalog.db"
    assert redact("postgresql://feed@db/feedserve") == "postgresql://feed@db/feedserve"


def test_a_service_gets_the_store_url_in_its_environment_never_in_argv(tmp_path: Path, catalog) -> None:
    """A child that `feedserve up` starts: its command line (what `ps` shows every local user) does not hold the
    store's URL; its environment (readable by its own user only) does. (A real store, so that the child is still
    running when /proc is read: an exited one shows neither.)"""
    store = catalog.copy(tmp_path / "marker-s3cret")
    port = free_ports(1)[0]
    stack = Stack(tmp_path, store, "simulator", StackConfig(paramserver_port=port), tmp_path / "logs")
    service = stack._spawn("paramserver", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state"))
    try:
        cmdline = b""
        while not cmdline and service.process.poll() is None:  # empty until the child has exec'd its program
            cmdline = Path(f"/proc/{service.process.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{service.process.pid}/environ").read_bytes()
        assert service.process.poll() is None, f"the paramserver exited before it was read:\n{service.log_tail()}"
        assert b"paramserver" in cmdline and b"s3cret" not in cmdline
        assert f"{STORE_ENV}={store}".encode() in environ
    finally:
        stack.stop()


def test_the_admin_key_is_not_printed_when_stdout_is_not_a_terminal(tmp_path: Path, capsys) -> None:
    """Under compose's bootstrap or CI (no terminal) the key is written to HOME/admin.key, mode 0600, and the
    output says where, without the key itself."""
    args = argparse.Namespace(home=tmp_path, plaintext=True, prepare_only=False)
    _, token = stack_security(args, str(tmp_path / "catalog.db"))
    out = capsys.readouterr().out
    assert token and token not in out and str(admin_key_path(tmp_path)) in out
    assert admin_key_path(tmp_path).stat().st_mode & 0o777 == 0o600


def test_secrets_go_to_feedserve_secrets_not_home_when_it_is_set(tmp_path: Path, monkeypatch) -> None:
    """With $FEEDSERVE_SECRETS (compose's bootstrap), the CA, its key, every certificate and the admin key are made
    there and HOME gets none of them: the data volume every service mounts holds no secret."""
    home, secrets = tmp_path / "home", tmp_path / "secrets"
    monkeypatch.setenv(SECRETS_ENV, str(secrets))
    args = argparse.Namespace(home=home, plaintext=False, prepare_only=True)
    tls, token = stack_security(args, str(tmp_path / "catalog.db"))  # the keys: in the store
    try:
        assert (secrets / "tls" / "ca.key").exists() and admin_key_path(home) == secrets / "admin.key"
        assert (secrets / "admin.key").read_text().strip() == token
        assert {tls_.cert.parent for tls_ in tls.values()} == {secrets / "tls"}
        assert not (home / "tls").exists() and not (home / "admin.key").exists()
    finally:
        configure(None)
