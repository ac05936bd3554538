"""TLS on every port: internal services demand a certificate the project's CA signed (mutual TLS), the public
port serves TLS without one, and a whole feed travels over it. Certificates made by cli/certificates.py."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.certificates import create_authority, ensure_certificates, issue
from feedserve.v1 import gateway_pb2, gateway_pb2_grpc
from mesh import security
from mesh.grpc_server import start_server
from tests.stack import running_stack


@pytest.fixture
def certificates(tmp_path: Path):
    """The deployment's certificates, and a rogue CA's client certificate; plaintext again afterwards."""
    made = ensure_certificates(tmp_path / "tls")
    create_authority(tmp_path / "rogue", "not feedserve")
    rogue = issue(tmp_path / "rogue", "operator")
    yield made, rogue
    security.configure(None)


async def _check(address: str, credentials: grpc.ChannelCredentials | None, service: str = "") -> grpc.StatusCode:
    """Health's Check at `address`; with `service`, the server must hold that service's certificate."""
    options = [("grpc.ssl_target_name_override", service)] if service else []
    channel = (grpc.aio.insecure_channel(address) if credentials is None
               else grpc.aio.secure_channel(address, credentials, options=options))
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        return grpc.StatusCode.OK


def test_an_internal_service_refuses_every_client_without_a_certificate_its_ca_signed(certificates, run) -> None:
    """Plaintext, TLS without a client certificate, and a certificate from another CA are all refused;
    the project's client certificate is served."""
    made, rogue = certificates
    ca = made["operator"].ca.read_bytes()

    async def body() -> None:
        security.configure(made["paramserver"])
        server = await start_server({}, "127.0.0.1:0")
        address = f"127.0.0.1:{server.port}"
        try:
            assert await _check(address, None) == grpc.StatusCode.UNAVAILABLE
            bare = grpc.ssl_channel_credentials(root_certificates=ca)
            assert await _check(address, bare, "paramserver") == grpc.StatusCode.UNAVAILABLE
            foreign = grpc.ssl_channel_credentials(root_certificates=ca, private_key=rogue.key.read_bytes(),
                                                   certificate_chain=rogue.cert.read_bytes())
            assert await _check(address, foreign, "paramserver") == grpc.StatusCode.UNAVAILABLE
            assert await _check(address, made["operator"].channel_credentials(), "paramserver") == grpc.StatusCode.OK
        finally:
            await server.stop(0)

    run(body())


def test_the_public_port_serves_tls_without_a_client_certificate_and_refuses_plaintext(certificates, run) -> None:
    made, _ = certificates
    ca = made["operator"].ca.read_bytes()

    async def body() -> None:
        security.configure(made["gateway"])
        server = await start_server({}, "127.0.0.1:0", public=True)
        address = f"127.0.0.1:{server.port}"
        try:
            assert await _check(address, grpc.ssl_channel_credentials(root_certificates=ca)) == grpc.StatusCode.OK
            assert await _check(address, None) == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(0)

    run(body())


def test_a_feed_travels_over_mutual_tls_between_every_service(catalog, manifest, tmp_path, certificates, run) -> None:
    """paramserver, ranker and gateway with TLS on every port and channel, each presenting its own role's
    certificate and checking its callers' roles: a feed is ranked, not degraded."""
    made, _ = certificates

    async def body() -> None:
        security.configure(made["gateway"])
        async with running_stack(catalog, manifest, tmp_path, tls=made) as stack:
            channel = security.open_aio_channel(f"127.0.0.1:{stack.ports['gateway']}")
            async with channel:
                feed = await gateway_pb2_grpc.GatewayStub(channel).Feed(gateway_pb2.FeedRequest(user_id=2, k=5), timeout=10)
                assert len(feed.items) == 5 and not feed.degraded, feed.degraded_reason

    run(body())


def test_partial_tls_settings_are_refused_naming_what_is_missing(monkeypatch) -> None:
    monkeypatch.setenv("FEEDSERVE_TLS_CA", "/nowhere/ca.pem")
    monkeypatch.delenv("FEEDSERVE_TLS_CERT", raising=False)
    monkeypatch.delenv("FEEDSERVE_TLS_KEY", raising=False)
    with pytest.raises(ValueError, match="missing FEEDSERVE_TLS_CERT, FEEDSERVE_TLS_KEY"):
        security.tls_from_env()
    with pytest.raises(ValueError, match="cannot be read"):
        security.configure(security.Tls(Path("/nowhere/ca.pem"), Path("/nowhere/c.pem"), Path("/nowhere/k.pem")))


def test_key_files_never_follow_a_planted_link_and_are_0600_whatever_was_there(tmp_path: Path) -> None:
    """A symlink planted where a key will be written, pointing at a file of the attacker's choosing, is replaced,
    not written through; a key written over a world-readable file ends 0600."""
    directory = tmp_path / "tls"
    directory.mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    (directory / "ca.key").symlink_to(target)
    (directory / "gateway.key").write_text("old")
    (directory / "gateway.key").chmod(0o644)
    create_authority(directory)
    issue(directory, "gateway")
    assert target.read_text() == "untouched" and not (directory / "ca.key").is_symlink()
    for name in ("ca.key", "gateway.key"):
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    assert not list(directory.glob(".*.tmp"))


@pytest.mark.parametrize("argv, refused", [
    (["--host", "0.0.0.0", "--no-auth"], True),  # plaintext and no keys, on every interface
    (["--host", "10.1.2.3", "--keys", "k.db"], True),  # keys, but in plaintext over the network
    (["--host", "0.0.0.0", "--no-auth", "--insecure-i-know"], False),
    (["--host", "127.0.0.1", "--no-auth"], False),
    (["--host", "::1", "--no-auth"], False),
])
def test_plaintext_or_no_auth_off_loopback_is_refused_unless_insisted(argv: list[str], refused: bool,
                                                                      monkeypatch) -> None:
    """A gateway on a non-loopback address without TLS (or without keys) exits saying why, before it binds;
    --insecure-i-know lets it; loopback is always allowed."""
    from gateway.__main__ import build_parser

    for name in security.TLS_ENV:
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(argv)
    if refused:
        with pytest.raises(SystemExit, match="not loopback"):
            security.tls_from_args(args)
    else:
        assert security.tls_from_args(args) is None


def test_up_refuses_plaintext_off_loopback_before_starting_anything(tmp_path: Path, capsys) -> None:
    """`feedserve up --host 0.0.0.0 --plaintext` exits 2 naming --insecure-i-know; nothing is created in HOME."""
    from cli.main import main

    home = tmp_path / "home"
    assert main(["up", "--home", str(home), "--host", "0.0.0.0", "--plaintext"]) == 2
    assert "--insecure-i-know" in capsys.readouterr().err and not home.exists()


def test_a_service_certificate_is_valid_only_for_its_own_service(certificates, run) -> None:
    """A caller that expects the paramserver refuses a server holding the ranker's (or the gateway's) certificate,
    and one reached by address refuses it too: only the gateway's names this machine. The operator's is no
    server certificate at all."""
    made, _ = certificates
    operator = made["operator"].channel_credentials()

    async def body() -> None:
        for role, expected in (("ranker", "paramserver"), ("gateway", "paramserver"), ("operator", "paramserver"),
                               ("ranker", ""), ("paramserver", "")):
            server = await start_server({}, "127.0.0.1:0", identity=made[role])
            try:
                assert await _check(f"127.0.0.1:{server.port}", operator, expected) == grpc.StatusCode.UNAVAILABLE, role
            finally:
                await server.stop(0)
        server = await start_server({}, "127.0.0.1:0", identity=made["paramserver"])
        try:
            assert await _check(f"127.0.0.1:{server.port}", operator, "paramserver") == grpc.StatusCode.OK
        finally:
            await server.stop(0)

    run(body())


def test_certificates_made_before_roles_are_issued_again_with_their_role(tmp_path: Path) -> None:
    """A HOME/tls from an older feedserve (certificates naming no role, a `client` one) gets one certificate per
    role, each naming it; a current one is kept as it is."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from cli.certificates import certificate_role

    directory = tmp_path / "tls"
    made = ensure_certificates(directory)
    kept = made["ranker"].cert.read_bytes()
    old = x509.load_pem_x509_certificate(made["gateway"].cert.read_bytes())
    # an older gateway certificate: same CA, no role URI (as `issue` made them before roles)
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer).public_key(old.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(old.not_valid_before_utc)
               .not_valid_after(old.not_valid_after_utc)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName("gateway")]), critical=False))
    made["gateway"].cert.write_bytes(builder.sign(ca_key, old.signature_hash_algorithm).public_bytes(serialization.Encoding.PEM))
    assert certificate_role(made["gateway"].cert) == ""
    again = ensure_certificates(directory)
    assert {role: certificate_role(tls.cert) for role, tls in again.items()} == {role: role for role in again}
    assert again["ranker"].cert.read_bytes() == kept
