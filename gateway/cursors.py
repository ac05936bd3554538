"""Page cursors that any gateway replica continues: the rest of a ranking sealed into the cursor itself (AES-GCM
under a key every replica reads from the store), bound to the tenant and the user it was issued for, and dated.
Nothing is kept per cursor, so a cursor outlives the gateway that issued it and costs no memory."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import time
import zlib
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from catalog import Store
from errors import InvalidArgument
from feedserve.v1 import gateway_pb2

__all__ = ["CURSOR_SECRET", "PageCursors"]

CURSOR_SECRET = "page_cursors"  # the store's shared secret that seals every replica's cursors
_VERSION = 1
# version, nonce, user, the tenant's digest (the name stays out of the cursor), issued at (unix ms); authenticated as
# the sealed part's associated data, so none of it can be altered
_HEADER = struct.Struct("<B12sq8sQ")
_TAG = 16
_REFUSED = "not a cursor of this deployment: forged, altered, cut short, or sealed under another store's key"


def _tenant_digest(tenant: str) -> bytes:
    return hashlib.sha256(tenant.encode()).digest()[:8]


class PageCursors:
    """Seals the ranked items a feed has not shown yet into its next-page cursor, for `ttl_s` (by the wall clock:
    replicas on other hosts read the same time). Any gateway holding the same key opens it, so the next page
    continues that same ranking, with no item repeated, on whichever replica it reaches. A cursor of another
    tenant, of another user, a forged, altered or expired one is INVALID_ARGUMENT naming `cursor`. Presented twice,
    a cursor gives the same page twice (nothing records that it was used).

    The key is the store's shared secret CURSOR_SECRET (`key_from_store`); without a store, a random key of this
    process: its cursors are then this gateway's alone, and die with it."""

    def __init__(self, key: bytes | None = None, ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._seal = AESGCM(key if key is not None else AESGCM.generate_key(bit_length=256))
        self.ttl_s, self.clock = ttl_s, clock

    @classmethod
    def key_from_store(cls, store: Store, ttl_s: float = 600.0) -> PageCursors:
        """Cursors sealed under the store's shared key, which every replica on that store reads."""
        return cls(store.shared_secret(CURSOR_SECRET), ttl_s)

    def put(self, user: int, rest: list[gateway_pb2.FeedItem], tenant: str = "") -> str:
        """The cursor for the rest of a ranking made for `user` of `tenant`."""
        header = _HEADER.pack(_VERSION, os.urandom(12), user, _tenant_digest(tenant), int(self.clock() * 1000))
        body = zlib.compress(gateway_pb2.FeedResponse(items=rest).SerializeToString(), 1)  # fastest: 4x smaller
        sealed = self._seal.encrypt(header[1:13], body, header)
        return base64.urlsafe_b64encode(header + sealed).rstrip(b"=").decode()

    def take(self, token: str, user: int, tenant: str = "") -> list[gateway_pb2.FeedItem]:
        """The items behind `token`, for `user` of `tenant`."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidArgument("cursor", _REFUSED) from None
        if len(raw) < _HEADER.size + _TAG or raw[0] != _VERSION:
            raise InvalidArgument("cursor", _REFUSED)
        header = raw[:_HEADER.size]
        try:
            body = self._seal.decrypt(header[1:13], raw[_HEADER.size:], header)
        except InvalidTag:
            raise InvalidArgument("cursor", _REFUSED) from None
        _, _, owner, digest, issued_ms = _HEADER.unpack(header)
        if digest != _tenant_digest(tenant):
            raise InvalidArgument("cursor", "was issued to another tenant")
        if owner != user:
            raise InvalidArgument("cursor", "was issued for another user")
        if self.clock() - issued_ms / 1000 > self.ttl_s:
            raise InvalidArgument("cursor", f"expired: cursors last {self.ttl_s:.0f} s")
        return list(gateway_pb2.FeedResponse.FromString(zlib.decompress(body)).items)
