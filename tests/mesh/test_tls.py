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
    rogue = issue(tmp_path / "rogue", "client")
    yield made, rogue
    security.configure(None)


async def _check(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (grpc.aio.insecure_channel(address) if credentials is None
               else grpc.aio.secure_channel(address, credentials))
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
    ca = made["client"].ca.read_bytes()

    async def body() -> None:
        security.configure(made["paramserver"])
        server = await start_server({}, "127.0.0.1:0")
        address = f"127.0.0.1:{server.port}"
        try:
            assert await _check(address, None) == grpc.StatusCode.UNAVAILABLE
            assert await _check(address, grpc.ssl_channel_credentials(root_certificates=ca)) == grpc.StatusCode.UNAVAILABLE
            foreign = grpc.ssl_channel_credentials(root_certificates=ca, private_key=rogue.key.read_bytes(),
                                                   certificate_chain=rogue.cert.read_bytes())
            assert await _check(address, foreign) == grpc.StatusCode.UNAVAILABLE
            assert await _check(address, made["client"].channel_credentials()) == grpc.StatusCode.OK
        finally:
            await server.stop(0)

    run(body())


def test_the_public_port_serves_tls_without_a_client_certificate_and_refuses_plaintext(certificates, run) -> None:
    made, _ = certificates
    ca = made["client"].ca.read_bytes()

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
    """paramserver, ranker and gateway with TLS on every port and channel: a feed is ranked, not degraded."""
    made, _ = certificates

    async def body() -> None:
        security.configure(made["client"])
        async with running_stack(catalog, manifest, tmp_path) as stack:
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
