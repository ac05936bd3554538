"""How the CLI (and benchmarks) reach a secured stack: the CA and operator certificate, and the API key.

Defaults follow `feedserve up`: TLS from $FEEDSERVE_TLS_* or HOME/tls (the operator certificate `up` made), the
key from $FEEDSERVE_API_KEY or HOME/admin.key (the admin key `up` made on first run). Flags override both.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from mesh.config import default_home
from mesh.roles import OPERATOR
from mesh.security import Tls, add_tls_arguments, configure, open_channel, tls_from_args

__all__ = ["add_access_arguments", "configure_access", "gateway_channel", "stack_tls", "admin_key_path", "secrets_dir",
           "SECRETS_ENV", "KeyMetadata", "write_admin_key"]


SECRETS_ENV = "FEEDSERVE_SECRETS"


def secrets_dir(home: Path) -> Path:
    """Where a deployment keeps its secrets, `tls/` (the CA with its key, every certificate) and `admin.key`:
    $FEEDSERVE_SECRETS, else HOME. compose.yaml keeps them in a volume only its bootstrap mounts."""
    return Path(os.environ[SECRETS_ENV]) if os.environ.get(SECRETS_ENV) else home


def admin_key_path(home: Path) -> Path:
    return secrets_dir(home) / "admin.key"


def stack_tls(home: Path, name: str = OPERATOR) -> Tls | None:
    """`name`'s certificate under the secrets' tls/, if `feedserve up` created one."""
    directory = secrets_dir(home) / "tls"
    tls = Tls(directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    return tls if all(p.exists() for p in (tls.ca, tls.cert, tls.key)) else None


def write_admin_key(home: Path, token: str) -> Path:
    """Keep the admin key for the CLI, readable by its owner only."""
    path = admin_key_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return path


def add_access_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key", default=None,
                        help="the API key (default: $FEEDSERVE_API_KEY, else HOME/admin.key made by `feedserve up`)")
    parser.add_argument("--plaintext", action="store_true", help="connect without TLS even if HOME/tls exists")
    add_tls_arguments(parser)


def configure_access(args: argparse.Namespace) -> str:
    """Configure this process's TLS from the flags, the environment or HOME/tls; returns the API key ('' if none)."""
    home = getattr(args, "home", None) or default_home()
    if getattr(args, "plaintext", False):
        configure(None)
    else:
        tls = tls_from_args(args)
        if tls is None:
            tls = stack_tls(Path(home))
        configure(tls)
    key = args.api_key or os.environ.get("FEEDSERVE_API_KEY", "")
    if not key and admin_key_path(Path(home)).exists():
        key = admin_key_path(Path(home)).read_text().strip()
    return key


class KeyMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <key>` to every call of a blocking channel."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _with_key(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self.key}")]
        return details._replace(metadata=metadata)  # grpc's call details are a namedtuple

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._with_key(details), request)


def gateway_channel(address: str, key: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A blocking channel to the gateway under the configured TLS, sending `key` with every call."""
    channel = open_channel(address, options)
    return grpc.intercept_channel(channel, KeyMetadata(key)) if key else channel
