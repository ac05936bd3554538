"""GatewayAdmin: burst modes, spend, API keys and the model lifecycle (admin keys only; gateway/auth.py)."""

from __future__ import annotations

import grpc

from errors import FailedPrecondition, InvalidArgument, NotFound
from feedserve.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.cost import MAX_WINDOW_S, CostLedger
from gateway.keys import ApiKey, KeyStore, role_asked
from gateway.modes import ModeController
from gateway.rollout import GatewayRouting

__all__ = ["GatewayAdminService"]


def _key_info(key: ApiKey) -> gateway_pb2.KeyInfo:
    return gateway_pb2.KeyInfo(key_id=key.key_id, tenant=key.tenant, admin=key.admin, created_at=key.created_at,
                               revoked_at=key.revoked_at or 0.0, label=key.label, role=key.role)


class GatewayAdminService(gateway_pb2_grpc.GatewayAdminServicer):
    """Forcing a burst mode (or handing the choice back to the automatic switch), reading spend, managing keys."""

    def __init__(self, modes: ModeController, ledger: CostLedger, keys: KeyStore | None = None,
                 routing: GatewayRouting | None = None) -> None:
        self.modes, self.ledger, self.keys, self.routing = modes, ledger, keys, routing

    def _routing(self) -> GatewayRouting:
        if self.routing is None:
            raise FailedPrecondition("this gateway follows no model registry: start it with --store (and without --no-routing)")
        return self.routing

    async def ListModels(self, request: gateway_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> gateway_pb2.ModelList:
        return await self._routing().describe(request.family)

    async def StageModel(self, request: gateway_pb2.StageModelRequest,
                         context: grpc.aio.ServicerContext) -> gateway_pb2.ModelList:
        return await self._routing().stage(request.directory)

    async def ShadowModel(self, request: gateway_pb2.ModelVersionRequest,
                          context: grpc.aio.ServicerContext) -> gateway_pb2.ModelList:
        routing = self._routing()
        if request.family and request.family != routing.name:
            raise FailedPrecondition(f"shadow scoring compares rankings: it is for the {routing.name} family, not "
                                     f"{request.family!r} (a generation tier is staged, canaried and promoted)")
        sample = request.sample if request.HasField("sample") else None  # checked by the family, naming the field
        return await routing.change(request.family, lambda f, now: f.shadow_version(request.version, now, sample=sample))

    async def CanaryModel(self, request: gateway_pb2.CanaryRequest,
                          context: grpc.aio.ServicerContext) -> gateway_pb2.ModelList:
        return await self._routing().change(request.family,
                                            lambda f, now: f.canary_version(request.version, request.share, now))

    async def PromoteModel(self, request: gateway_pb2.ModelVersionRequest,
                           context: grpc.aio.ServicerContext) -> gateway_pb2.ModelList:
        return await self._routing().change(request.family, lambda f, now: f.promote(request.version, now))

    async def RollbackModel(self, request: gateway_pb2.RollbackRequest,
                            context: grpc.aio.ServicerContext) -> gateway_pb2.ModelList:
        if len(request.reason) > 500:
            raise InvalidArgument("reason", f"at most 500 characters, got {len(request.reason)}")
        return await self._routing().change(request.family, lambda f, now: f.rollback(now, request.reason or "operator"))

    def _key_store(self) -> KeyStore:
        if self.keys is None:
            raise FailedPrecondition("this gateway serves without API keys (--no-auth): start it with --keys PATH")
        return self.keys

    async def CreateKey(self, request: gateway_pb2.CreateKeyRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.CreatedKey:
        role = role_asked(request.role, request.admin)
        try:
            key, token = self._key_store().create(request.tenant, role, request.label)
        except ValueError as exc:
            raise InvalidArgument("tenant", str(exc)) from None
        return gateway_pb2.CreatedKey(key=_key_info(key), token=token)

    async def ListKeys(self, request: gateway_pb2.ListKeysRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.KeyList:
        return gateway_pb2.KeyList(keys=[_key_info(k) for k in self._key_store().list(request.include_revoked)])

    async def RevokeKey(self, request: gateway_pb2.RevokeKeyRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.KeyInfo:
        store = self._key_store()
        if not store.revoke(request.key_id):
            raise NotFound(f"key_id: no live key {request.key_id!r}")
        return next(_key_info(k) for k in store.list() if k.key_id == request.key_id)

    async def SetMode(self, request: gateway_pb2.SetModeRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.ModeStatus:
        if request.mode not in gateway_pb2.Mode.values():
            raise InvalidArgument("mode", f"unknown mode {request.mode}")
        self.modes.force(request.mode)
        return self.modes.status()

    async def GetMode(self, request: gateway_pb2.GetModeRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.ModeStatus:
        return self.modes.status()

    async def GetCost(self, request: gateway_pb2.GetCostRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.CostReport:
        window = request.window_s or 300
        if not 1 <= window <= MAX_WINDOW_S:
            raise InvalidArgument("window_s", f"expected 1..{MAX_WINDOW_S}, got {window}")
        return self.ledger.report(window)
