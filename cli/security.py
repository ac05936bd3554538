"""The CLI's security commands: `feedserve keys`, `certs`, `health`, and the certificates and admin key of `up`."""

from __future__ import annotations

import argparse
import json
import sys
import time

import grpc

from cli.access import admin_key_path, secrets_dir, write_admin_key
from cli.certificates import ensure_certificates
from gateway.keys import KeyStore, import_key_file, role_asked
from mesh.roles import OPERATOR, SERVICE_ROLES
from mesh.security import Tls, configure, configured, open_channel

__all__ = ["stack_security", "keys_command", "certs_command", "health_command"]


def stack_security(args: argparse.Namespace, store: str) -> tuple[dict[str, Tls] | None, str]:
    """Certificates (made once under HOME/tls) unless --plaintext, and an admin key in the store (made on first
    run, kept in HOME/admin.key); says which security the stack runs with. Keys of a keys file that an older
    feedserve kept (HOME/keys.db) are copied into the store once."""
    tls = None
    if args.plaintext:
        configure(None)
        print("security: PLAINTEXT between services and at the gateway (asked for with --plaintext); API keys still required")
    else:
        tls = ensure_certificates(secrets_dir(args.home) / "tls")
        configure(tls[OPERATOR])
        print(f"security: mutual TLS between services, TLS and API keys at the gateway (CA {secrets_dir(args.home) / 'tls' / 'ca.pem'})")
    keys = KeyStore(store)
    try:
        former = args.home / "keys.db"
        if former.exists() and (copied := import_key_file(former, keys)):
            print(f"copied {copied} API keys from {former} into the store (keys live in the store now)")
        key_file = admin_key_path(args.home)
        token = key_file.read_text().strip() if key_file.exists() else ""
        if not token or keys.verify(token) is None:
            _, token = keys.create("admin", "admin", label="made by feedserve up")
            write_admin_key(args.home, token)
            if sys.stdout.isatty() and not getattr(args, "prepare_only", False):
                print(f"admin API key (shown once; also in {key_file}, mode 0600): {token}")
            else:  # a log (compose's bootstrap, a CI job) is no place for it
                print(f"admin API key written to {key_file} (mode 0600); not printed, since this is not a terminal")
    finally:
        keys.close()
    return tls, token


def keys_command(args: argparse.Namespace) -> int:
    """`feedserve keys create|list|revoke` in the store (--store, default HOME/catalog.db), where every gateway
    replica reads them."""
    keys = KeyStore(args.store or args.home / "catalog.db")
    try:
        if args.action == "create":
            key, token = keys.create(args.tenant, role_asked(args.role or "", args.admin), args.label)
            print(f"{key.key_id}  tenant {key.tenant}  {key.role}")
            print(f"token (shown once): {token}")
        elif args.action == "list" and args.json:
            print(json.dumps([{"key_id": k.key_id, "tenant": k.tenant, "role": k.role, "label": k.label,
                               "created_at": k.created_at, "revoked_at": k.revoked_at or None}
                              for k in keys.list(include_revoked=args.all)], indent=2))
        elif args.action == "list":
            print(f"{'key id':<14} {'tenant':<20} {'role':<7} {'created':<20} {'revoked':<20} label")
            for key in keys.list(include_revoked=args.all):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(key.created_at))
                gone = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(key.revoked_at)) if key.revoked_at else "-"
                print(f"{key.key_id:<14} {key.tenant:<20} {key.role:<7} {when:<20} {gone:<20} {key.label}")
        elif not keys.revoke(args.key_id):
            print(f"error: no live key {args.key_id!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.key_id}: every gateway refuses it (UNAUTHENTICATED) within a second")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        keys.close()
    return 0


def certs_command(args: argparse.Namespace) -> int:
    """`feedserve certs DIR`: the CA (made once) and a certificate per role, the gateway's valid for --host too."""
    from cli.certificates import create_authority, issue
    from mesh.roles import ROLES

    if not (args.directory / "ca.pem").exists():
        create_authority(args.directory)
    for name in ROLES:
        issue(args.directory, name, tuple(args.host))
        print(f"{name:<12} {args.directory / (name + '.pem')}  {args.directory / (name + '.key')}")
    print(f"CA: {args.directory / 'ca.pem'} (its key {args.directory / 'ca.key'} signs more; keep it private)")
    return 0


def health_command(args: argparse.Namespace) -> int:
    """Exit 0 if the service at ADDRESS reports SERVING (over its TLS, with this process's certificate). The
    server must prove it is --service; by default the service this process's certificate names (a probe checks
    its own service), or the gateway for the operator's."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cli.certificates import certificate_role

    tls = configured()
    own = certificate_role(tls.cert) if tls is not None else ""
    service = args.service or (own if own in SERVICE_ROLES else "gateway")
    with open_channel(args.address, service="" if service == "gateway" else service) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"{args.address}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
