"""Transport security of every gRPC port and channel: TLS, mutual between services, or plaintext when asked for.

A process is configured once (`configure`), from its flags or from $FEEDSERVE_TLS_CA, $FEEDSERVE_TLS_CERT and
$FEEDSERVE_TLS_KEY. Then every server it starts listens with TLS, and every channel it opens presents its own
certificate and trusts only the project's CA. Internal services demand a client certificate the CA signed
(mutual TLS) and check its role per method (mesh/roles.py); a channel to one checks that the server's certificate
names that service. The gateway's public port asks for no certificate (callers prove who they are with API keys,
gateway/auth.py).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

__all__ = ["Tls", "configure", "configured", "add_tls_arguments", "tls_from_args", "tls_from_env",
           "open_channel", "open_aio_channel", "add_port", "TLS_ENV"]

TLS_ENV = ("FEEDSERVE_TLS_CA", "FEEDSERVE_TLS_CERT", "FEEDSERVE_TLS_KEY")


@dataclass(frozen=True)
class Tls:
    """PEM files: the CA every peer must be signed by, and this process's own certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def _read(self) -> tuple[bytes, bytes, bytes]:
        try:
            return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()
        except OSError as exc:
            raise ValueError(f"TLS file {exc.filename} cannot be read: {exc.strerror}") from None

    def server_credentials(self, require_client_cert: bool) -> grpc.ServerCredentials:
        ca, cert, key = self._read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=require_client_cert)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Trust the CA only, and present our certificate (mutual TLS with the internal services)."""
        ca, cert, key = self._read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def env(self) -> dict[str, str]:
        """The environment that configures a child process the same way."""
        return dict(zip(TLS_ENV, (str(self.ca), str(self.cert), str(self.key)), strict=True))


_configured: Tls | None = None


def configure(tls: Tls | None) -> None:
    """Set this process's transport security: every later server and channel follows it (None: plaintext)."""
    global _configured
    if tls is not None:
        tls._read()  # fail now, naming the file, rather than at the first connection
    _configured = tls


def configured() -> Tls | None:
    return _configured


def tls_from_env() -> Tls | None:
    """TLS from $FEEDSERVE_TLS_CA/CERT/KEY: all three, or none (plaintext)."""
    values = [os.environ.get(name, "") for name in TLS_ENV]
    if not any(values):
        return None
    if not all(values):
        missing = [name for name, value in zip(TLS_ENV, values, strict=True) if not value]
        raise ValueError(f"TLS needs all of {', '.join(TLS_ENV)}; missing {', '.join(missing)}")
    return Tls(*(Path(v) for v in values))


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """--tls-ca, --tls-cert, --tls-key (default: the environment), for every service's command line."""
    group = parser.add_argument_group("transport security (default: $FEEDSERVE_TLS_CA/CERT/KEY; none: plaintext)")
    group.add_argument("--tls-ca", type=Path, default=None, help="PEM of the CA that signs every peer")
    group.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate this process presents")
    group.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    group.add_argument("--insecure-i-know", action="store_true",
                       help="allow plaintext (or the gateway's --no-auth) on an address other than loopback: every "
                            "RPC, the admin ones included, is then open to whoever reaches the port")


def is_loopback(host: str) -> bool:
    """Whether `host` listens only for this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name, or 0.0.0.0's like: anybody may reach it


def tls_from_args(args: argparse.Namespace) -> Tls | None:
    """The flags if any is given (then all three are needed), else the environment. Plaintext, or a gateway's
    --no-auth, off loopback is refused (SystemExit saying so) unless --insecure-i-know is given."""
    given = [args.tls_ca, args.tls_cert, args.tls_key]
    if not any(given):
        tls = tls_from_env()
    elif not all(given):
        raise ValueError("--tls-ca, --tls-cert and --tls-key go together")
    else:
        tls = Tls(*given)
    host = getattr(args, "host", "127.0.0.1")
    open_to = "plaintext" if tls is None else ("--no-auth" if getattr(args, "no_auth", False) else "")
    if open_to and not is_loopback(host) and not getattr(args, "insecure_i_know", False):
        raise SystemExit(f"error: {open_to} on {host}, which is not loopback, leaves every RPC (the admin ones "
                         f"included) open to whoever reaches it; serve on 127.0.0.1, use TLS and keys, or say "
                         f"--insecure-i-know")
    return tls


def add_port(server: Any, address: str, require_client_cert: bool = True, identity: Tls | None = None) -> int:
    """Listen on `address` with the configured security, presenting `identity`'s certificate if given (several
    services in one process: tests); returns the port (0 if it could not bind)."""
    tls = identity or _configured
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, tls.server_credentials(require_client_cert))


def _verifying(service: str, options: list[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """Channel options that make TLS accept only `service`'s own certificate, whatever the address says: an internal
    service's certificate names that service alone (cli/certificates.py), so another role's cannot stand in."""
    return [*(options or []), *((("grpc.ssl_target_name_override", service),) if service else ())]


def open_aio_channel(address: str, options: list[tuple[str, Any]] | None = None, service: str = "") -> grpc.aio.Channel:
    """An asyncio channel with the configured security; with TLS, the server must prove it is `service` (an
    internal one) or, without `service`, hold a certificate for the address (the gateway's public port)."""
    if _configured is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, _configured.channel_credentials(), options=_verifying(service, options))


def open_channel(address: str, options: list[tuple[str, Any]] | None = None, service: str = "") -> grpc.Channel:
    """A blocking channel with the configured security (CLI tools, readiness checks); `service` as above."""
    if _configured is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, _configured.channel_credentials(), options=_verifying(service, options))
