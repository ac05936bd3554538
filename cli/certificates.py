"""A local certificate authority for one deployment: created once, then one certificate per role.

`feedserve up` calls `ensure_certificates(HOME/tls)`. The CA's key stays in that directory (0600). Each
certificate names its role (CN and the SAN URI `spiffe://feedserve/<role>`, mesh/roles.py), which the internal
services check per method. A service's certificate is valid as a server for that service's name only (callers
verify it by name, whatever the address); the gateway's, which clients reach by address, is also valid for
localhost, 127.0.0.1 and the hosts given. The operator's (the CLI's) is a client certificate only. In
Kubernetes the same files are mounted from one Secret per service.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.roles import OPERATOR, ROLES, role_named, role_uri
from mesh.security import Tls

__all__ = ["ensure_certificates", "create_authority", "issue", "certificate_role"]

VALID_DAYS = 825  # the longest validity clients still accept for a leaf certificate


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write beside the target, then rename over it: a new file of our own (O_EXCL | O_NOFOLLOW, so a symlink or
    a file planted at the staging name is refused, never followed), its mode set explicitly whatever the umask
    or an earlier file's mode; the rename replaces a link at `path` itself rather than writing through it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mode = 0o600 if private else 0o644
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def create_authority(directory: Path, name: str = "feedserve local CA") -> None:
    """A new self-signed CA in `directory` (ca.pem, ca.key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(directory / "ca.key", _key_pem(key), private=True)
    _write(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)


def issue(directory: Path, role: str, hosts: tuple[str, ...] = ()) -> Tls:
    """A certificate for `role` signed by the CA in `directory`: a service's is valid as a server (for its own name;
    the gateway's for `hosts` and this machine too) and as a client, the operator's as a client only."""
    if role not in ROLES:
        raise ValueError(f"no role {role!r}: one of {', '.join(ROLES)}")
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / 'ca.key'} is not an EC key made by feedserve certs")
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(role_uri(role))]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role != OPERATOR:
        names.append(x509.DNSName(role))
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if role == "gateway":
        for host in ("localhost", "127.0.0.1", *hosts):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(directory / f"{role}.key", _key_pem(key), private=True)
    _write(directory / f"{role}.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return Tls(directory / "ca.pem", directory / f"{role}.pem", directory / f"{role}.key")


def certificate_role(path: Path) -> str:
    """The role a certificate file names ('' if none: one made before roles, or not by feedserve)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return ""
    return role_named(uris)


def ensure_certificates(directory: Path, roles: tuple[str, ...] = ROLES) -> dict[str, Tls]:
    """The CA and one certificate per role, created where missing; existing files are kept, unless they name no
    role (made by a feedserve before roles), which are issued again."""
    if not (directory / "ca.pem").exists() or not (directory / "ca.key").exists():
        create_authority(directory)
    out = {}
    for role in roles:
        cert, key = directory / f"{role}.pem", directory / f"{role}.key"
        if cert.exists() and key.exists() and certificate_role(cert) == role:
            out[role] = Tls(directory / "ca.pem", cert, key)
        else:
            out[role] = issue(directory, role)
    return out
