"""The gateway's door: API keys on every public RPC, of a role (read, write, admin) that covers the method, the
tenant from the key, per-tenant quotas, and caches that never answer across tenants. Real gRPC servers on free
ports, a real key file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from catalog import open_store
from feedserve.v1 import catalog_pb2, common_pb2, gateway_pb2
from gateway.auth import role_needed
from gateway.keys import ROLES, KeyStore
from gateway.quotas import Quota, TenantQuotas
from tests.stack import running_stack

PUBLIC = [gateway_pb2.DESCRIPTOR.services_by_name[name] for name in ("Gateway", "GatewayAdmin")] + [
    catalog_pb2.DESCRIPTOR.services_by_name["Catalog"]]


@pytest.fixture
def keys(tmp_path: Path):
    store = KeyStore(tmp_path / "keys.db")
    yield store
    store.close()


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _status(channel: grpc.aio.Channel, method, metadata=()) -> grpc.StatusCode:
    """Call `method` with an empty request; the status it ends with (OK or the error's)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_type = {"FeedRequest": gateway_pb2.FeedRequest}.get(method.input_type.name)
    from google.protobuf import message_factory

    cls = request_type or message_factory.GetMessageClass(method.input_type)
    call_type = channel.unary_stream if method.server_streaming else channel.unary_unary
    call = call_type(path, request_serializer=cls.SerializeToString, response_deserializer=lambda b: b)(
        cls(), metadata=metadata, timeout=10)
    try:
        if method.server_streaming:
            async for _ in call:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


class TestApiKeys:
    def test_every_public_rpc_refuses_a_missing_unknown_or_revoked_key(self, catalog, manifest, tmp_path, keys, run) -> None:
        """Each method of Gateway, GatewayAdmin and Catalog: no key, a forged key and a revoked key are all
        UNAUTHENTICATED, before any handler runs."""
        _, revoked = keys.create("acme")
        keys.revoke(keys.list()[0].key_id)
        forged = "fsk_000000000000_" + "A" * 43

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
                channel = stack.channels[2]
                for service in PUBLIC:
                    for method in service.methods:
                        for metadata in ((), _bearer(forged), _bearer(revoked), (("authorization", "Basic abc"),)):
                            code = await _status(channel, method, metadata)
                            assert code == grpc.StatusCode.UNAUTHENTICATED, (method.full_name, metadata, code)

        run(body())

    def test_admin_rpcs_need_an_admin_key_and_a_refusal_changes_nothing(self, catalog, manifest, tmp_path, keys, run) -> None:
        """SetMode with a write key: PERMISSION_DENIED and the mode stays; with an admin key it is forced. Health
        stays open for probes."""
        _, tenant = keys.create("acme")
        _, admin = keys.create("ops", "admin")

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
                emergency = gateway_pb2.SetModeRequest(mode=gateway_pb2.MODE_EMERGENCY)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stack.admin.SetMode(emergency, metadata=_bearer(tenant))
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "needs a key with the admin role" in refused.value.details()
                status = await stack.admin.GetMode(gateway_pb2.GetModeRequest(), metadata=_bearer(tenant))
                assert not status.forced
                forced = await stack.admin.SetMode(emergency, metadata=_bearer(admin))
                assert forced.forced and forced.mode == gateway_pb2.MODE_EMERGENCY
                for method in ("DeleteItems", "DeleteUser"):
                    code = await _status(stack.channels[2], catalog_pb2.DESCRIPTOR.services_by_name["Catalog"]
                                         .methods_by_name[method], _bearer(tenant))
                    assert code == grpc.StatusCode.PERMISSION_DENIED, method
                from grpc_health.v1 import health_pb2, health_pb2_grpc

                health = health_pb2_grpc.HealthStub(stack.channels[2])
                assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING

        run(body())

    def test_only_feeds_generations_and_the_mode_are_read_and_only_what_a_backend_sends_is_write(self) -> None:
        """Every method of the public port, placed: read asks (Feed, Generate, GetMode), write also sends
        (Interact, InteractBatch, UpsertItems, UpsertUsers), and everything else (deletes, keys, models, modes,
        costs) is admin's, as is a method nobody has placed yet."""
        placed = {f"{m.containing_service.name}/{m.name}": role_needed(f"/{m.containing_service.full_name}/{m.name}")
                  for service in PUBLIC for m in service.methods}
        assert {name for name, role in placed.items() if role == "read"} == {
            "Gateway/Feed", "Gateway/Generate", "GatewayAdmin/GetMode"}
        assert {name for name, role in placed.items() if role == "write"} == {
            "Gateway/Interact", "Catalog/InteractBatch", "Catalog/UpsertItems", "Catalog/UpsertUsers"}
        assert {"Catalog/DeleteItems", "Catalog/DeleteUser", "GatewayAdmin/SetMode", "GatewayAdmin/CreateKey",
                "GatewayAdmin/GetCost", "GatewayAdmin/PromoteModel"} <= {n for n, r in placed.items() if r == "admin"}
        assert role_needed("/feedserve.v1.Gateway/SomethingNew") == "admin"

    def test_a_key_is_refused_every_method_above_its_role_before_the_handler_runs(self, catalog, manifest, tmp_path,
                                                                                   keys, run) -> None:
        """A read key gets PERMISSION_DENIED (naming the role needed and its own) for every write and admin method,
        a write key for every admin method; the refused writes change nothing (an item hidden by a read key's
        UpsertItems is still in the feed), and a read key still gets its feed."""
        tokens = {role: keys.create("acme", role)[1] for role in ROLES}

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
                channel = stack.channels[2]
                for role, token in tokens.items():
                    for service in PUBLIC:
                        for method in service.methods:
                            needed = role_needed(f"/{service.full_name}/{method.name}")
                            if ROLES.index(needed) > ROLES.index(role):
                                assert await _status(channel, method, _bearer(token)) == \
                                    grpc.StatusCode.PERMISSION_DENIED, (role, method.full_name)
                shown = (await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=1, k=5),
                                                  metadata=_bearer(tokens["read"]))).items[0]
                store = open_store(stack.store)
                try:
                    before = store.sequence()
                    hide = catalog_pb2.UpsertItemsRequest(items=[catalog_pb2.CatalogItem(
                        id=shown.id, title="hidden by a reader", hidden=True)])
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await stack.catalog.UpsertItems(hide, metadata=_bearer(tokens["read"]))
                    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                    assert "needs a key with the write role" in refused.value.details()
                    assert "has the read role" in refused.value.details()
                    assert store.sequence() == before
                    await stack.catalog.UpsertItems(hide, metadata=_bearer(tokens["write"]))
                    assert store.sequence() > before
                finally:
                    store.close()

        run(body())

    def test_keys_are_created_listed_and_revoked_over_the_admin_api(self, catalog, manifest, tmp_path, keys, run) -> None:
        """CreateKey returns a working token once; ListKeys shows no secret; RevokeKey locks it out at once."""
        _, admin = keys.create("ops", "admin")

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
                made = await stack.admin.CreateKey(gateway_pb2.CreateKeyRequest(tenant="acme", label="web"),
                                                   metadata=_bearer(admin))
                assert made.token.startswith(f"fsk_{made.key.key_id}_") and made.key.tenant == "acme"
                feed = gateway_pb2.FeedRequest(user_id=1, k=3)
                assert len((await stack.gateway.Feed(feed, metadata=_bearer(made.token))).items) == 3
                listed = await stack.admin.ListKeys(gateway_pb2.ListKeysRequest(), metadata=_bearer(admin))
                assert made.token not in str(listed) and made.key.key_id in [k.key_id for k in listed.keys]
                await stack.admin.RevokeKey(gateway_pb2.RevokeKeyRequest(key_id=made.key.key_id), metadata=_bearer(admin))
                with pytest.raises(grpc.aio.AioRpcError) as gone:
                    await stack.gateway.Feed(feed, metadata=_bearer(made.token))
                assert gone.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await stack.admin.CreateKey(gateway_pb2.CreateKeyRequest(tenant="no spaces"), metadata=_bearer(admin))
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "tenant" in bad.value.details()
                reader = await stack.admin.CreateKey(gateway_pb2.CreateKeyRequest(tenant="acme", role="read"),
                                                     metadata=_bearer(admin))
                assert (reader.key.role, reader.key.admin, made.key.role) == ("read", False, "write")
                for request, field in ((gateway_pb2.CreateKeyRequest(tenant="acme", role="owner"), "role"),
                                       (gateway_pb2.CreateKeyRequest(tenant="acme", role="read", admin=True), "admin")):
                    with pytest.raises(grpc.aio.AioRpcError) as bad:
                        await stack.admin.CreateKey(request, metadata=_bearer(admin))
                    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert bad.value.details().startswith(field), bad.value.details()
                listed = await stack.admin.ListKeys(gateway_pb2.ListKeysRequest(include_revoked=True),
                                                    metadata=_bearer(admin))
                assert len(listed.keys) == 3  # ops, web (revoked) and the reader: the refused requests made none

        run(body())

    def test_a_key_made_before_roles_reads_as_write(self, keys) -> None:
        """A stored "tenant" key (an older release's) is a write key: what it could call then, no more."""
        made, token = keys.create("acme")
        with keys.store._transaction() as cur:  # as an older release stored it
            cur.execute(keys.store._sql("UPDATE access_keys SET role = 'tenant' WHERE key_id = ?"), (made.key_id,))
        key = keys.verify(token)
        assert key is not None and key.role == "write" and key.may("write") and not key.may("admin")
        assert [k.role for k in keys.list()] == ["write"]
        with pytest.raises(ValueError, match="role"):
            keys.create("acme", "owner")

    def test_the_tenant_comes_from_the_key_never_from_the_body(self, catalog, manifest, tmp_path, keys, run) -> None:
        """acme's key sending context.tenant=globex is served and cached as acme: globex's next feed is not a hit."""
        _, acme = keys.create("acme")
        _, globex = keys.create("globex")

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
                spoof = gateway_pb2.FeedRequest(user_id=3, k=5, context=common_pb2.RequestContext(tenant="globex"))
                first = await stack.gateway.Feed(spoof, metadata=_bearer(acme))
                assert not first.cached
                again = await stack.gateway.Feed(spoof, metadata=_bearer(acme))
                assert again.cached  # acme's own entry
                theirs = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=3, k=5), metadata=_bearer(globex))
                assert not theirs.cached  # acme's spoof never filled globex's cache

        run(body())


class TestTenantIsolation:
    def test_a_page_cursor_does_not_cross_tenants(self, catalog, manifest, tmp_path, keys, run) -> None:
        """acme's next-page cursor presented with globex's key is INVALID_ARGUMENT, and acme can still use it."""
        _, acme = keys.create("acme")
        _, globex = keys.create("globex")

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
                first = await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=5), metadata=_bearer(acme))
                assert first.next_cursor
                with pytest.raises(grpc.aio.AioRpcError) as crossed:
                    await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=4, k=5, cursor=first.next_cursor),
                                             metadata=_bearer(globex))
                assert crossed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "another tenant" in crossed.value.details()

        run(body())

    def test_one_tenants_burst_does_not_shed_another_tenants_feeds(self, catalog, manifest, tmp_path, keys, run) -> None:
        """acme (a burst of 2, refilled at one request per 100 s) sends 20 feeds at once: 18 or more are
        RESOURCE_EXHAUSTED with a retry-after-ms trailer; globex's 5 feeds in the same moment are all served."""
        _, acme = keys.create("acme")
        _, globex = keys.create("globex")
        # acme's refill is slow enough that however long admission takes here, no third token arrives
        quotas = TenantQuotas(Quota(requests_per_s=0.01, burst=2), {"globex": Quota(requests_per_s=100, burst=100)})

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys, quotas=quotas) as stack:
                async def feed(token: str, user: int):
                    call = stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=user, k=3), metadata=_bearer(token))
                    try:
                        await call
                    except grpc.aio.AioRpcError as error:
                        return error.code(), dict(error.trailing_metadata() or ())
                    return grpc.StatusCode.OK, {}

                results = await asyncio.gather(*[feed(acme, 10 + n) for n in range(20)],
                                               *[feed(globex, 40 + n) for n in range(5)])
                acme_codes, globex_codes = [r[0] for r in results[:20]], [r[0] for r in results[20:]]
                assert globex_codes == [grpc.StatusCode.OK] * 5
                shed = [r for r in results[:20] if r[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
                assert acme_codes.count(grpc.StatusCode.OK) <= 2 and len(shed) >= 18
                assert all(int(trailers["retry-after-ms"]) > 0 for _, trailers in shed)

        run(body())

    def test_a_refused_call_is_answered_before_its_request_is_parsed(self, catalog, manifest, tmp_path, keys,
                                                                   run) -> None:
        """A body that is not a FeedRequest at all: with a forged key it is UNAUTHENTICATED, from a tenant past its
        quota RESOURCE_EXHAUSTED (the door decides from the metadata, never reading the body); with a live key
        under its quota it is read, and refused INVALID_ARGUMENT naming the message (not gRPC's UNKNOWN)."""
        _, acme = keys.create("acme")
        _, broke = keys.create("broke")
        quotas = TenantQuotas(Quota(), {"broke": Quota(requests_per_s=0.01, burst=1)})
        garbage = b"\xff" * 64  # no protobuf message parses from it

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys, quotas=quotas) as stack:
                feed = stack.channels[2].unary_unary("/feedserve.v1.Gateway/Feed", response_deserializer=lambda b: b)

                async def status(token: str) -> grpc.StatusCode:
                    try:
                        await feed(garbage, metadata=_bearer(token), timeout=10)
                    except grpc.aio.AioRpcError as error:
                        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                            assert error.details().startswith("request: not a valid FeedRequest message")
                        return error.code()
                    return grpc.StatusCode.OK

                assert await status("fsk_0123456789ab_" + "x" * 43) == grpc.StatusCode.UNAUTHENTICATED
                await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=2, k=3), metadata=_bearer(broke))  # its token
                assert await status(broke) == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert await status(acme) == grpc.StatusCode.INVALID_ARGUMENT

        run(body())


class TestBackfill:
    def test_an_admins_dated_events_are_judged_by_their_time_a_tenants_by_the_wall_clock(
            self, catalog, manifest, tmp_path, keys, run) -> None:
        """40 likes dated a minute apart: all move the vector under an admin key (a backfill of history); under a
        write key the same dated likes are live, and the default cap of 30 a minute holds the rest back."""
        _, admin = keys.create("ops", "admin")
        _, tenant = keys.create("acme")

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
                start = int(time.time()) - 86_400
                for token, user in ((admin, int(catalog.user_ids[0])), (tenant, int(catalog.user_ids[1]))):
                    held = 0
                    for n in range(40):
                        ack = await stack.gateway.Interact(gateway_pb2.InteractRequest(
                            user_id=user, item_id=n + 1, event=common_pb2.EVENT_TYPE_CLICK, timestamp=start + 60 * n),
                            metadata=_bearer(token))
                        held += ack.held_back != common_pb2.GUARDRAIL_NONE
                    assert held == (0 if token == admin else 10), token

        run(body())

    def test_a_future_timestamp_is_refused_naming_the_field(self, catalog, manifest, tmp_path, keys, run) -> None:
        """Interact dated an hour ahead, even with an admin key: INVALID_ARGUMENT naming `timestamp`."""
        _, admin = keys.create("ops", "admin")

        async def body() -> None:
            async with running_stack(catalog, manifest, tmp_path, keys=keys) as stack:
                ahead = int(time.time()) + 3600
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stack.gateway.Interact(gateway_pb2.InteractRequest(
                        user_id=1, item_id=1, event=common_pb2.EVENT_TYPE_LIKE, timestamp=ahead), metadata=_bearer(admin))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "timestamp" in caught.value.details()
        run(body())
