"""Authentication: an ``Authorization: Bearer`` value → the ``Principal`` it belongs to.

All in memory: the active keys of enabled tenants are loaded from the store at start and again
whenever tenants or keys change (``reload``). Every outcome costs the same work, one HMAC and one
dict lookup, and every failure (missing, malformed, unknown, revoked) raises the same
``AuthenticationFailed``, so neither the answer nor its timing says which it was.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.errors import AuthenticationFailed, PermissionDenied
from gateway.core.tenant_settings import Limits
from gateway.tenants.keys import hash_key
from gateway.tenants.store import ApiKey, Store, Tenant

log = logging.getLogger(__name__)

FAILURE_MESSAGE = (
    "Incorrect API key provided. Send a gateway key as 'Authorization: Bearer gw-...'."
)
_NO_MATCH = "0" * 64


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant, the key, and the limits that apply to both."""

    tenant: str
    key_id: str
    key_prefix: str
    tenant_limits: Limits
    key_limits: Limits


def bearer_token(header: str | None) -> tuple[str, bool]:
    """The presented token and whether the header was well formed ("Bearer <token>")."""
    if not header:
        return "", False
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token, scheme.lower() == "bearer" and bool(token) and " " not in token


class Authenticator:
    """Maps key hashes to principals; ``load`` swaps the whole map at once."""

    def __init__(
        self, secret: bytes, admin_digest: str | None, anonymous: Principal | None = None
    ) -> None:
        self._secret = secret
        self._anonymous = anonymous
        """Who a request without a valid key is, when keys are not required (else None)."""
        self._admin_digest = admin_digest or _NO_MATCH
        self._principals: dict[str, tuple[str, Principal]] = {}
        self.revision = -1
        """The store revision last loaded (read before loading, so no change slips between)."""

    def load(self, tenants: Iterable[Tenant], keys: Iterable[ApiKey]) -> None:
        """Replace the known keys with the active keys of the enabled ``tenants``."""
        enabled = {t.name: t for t in tenants if not t.disabled}
        self._principals = {
            k.digest: (
                k.digest,
                Principal(k.tenant, k.id, k.prefix, enabled[k.tenant].limits, k.limits),
            )
            for k in keys
            if k.active and k.tenant in enabled
        }

    async def reload(self, store: Store) -> None:
        """Load tenants and keys from ``store`` (a few small queries, off the request path)."""
        revision = await store.revision()
        tenants = await store.list_tenants()
        keys = await store.list_keys(active_only=True)
        self.load(tenants, keys)
        self.revision = revision
        log.debug("loaded %d active keys of %d tenants", len(self._principals), len(tenants))

    @property
    def secret(self) -> bytes:
        """The key-hashing secret, for creating keys that this authenticator will accept."""
        return self._secret

    @property
    def key_count(self) -> int:
        return len(self._principals)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of a tenant key; ``AuthenticationFailed`` for anything else."""
        principal = self._match(authorization)
        if principal is None:
            raise AuthenticationFailed(FAILURE_MESSAGE)
        return principal

    def identify(self, authorization: str | None) -> Principal:
        """The caller of an API request: a tenant key's principal, or anonymous where allowed."""
        principal = self._match(authorization)
        if principal is not None:
            return principal
        if self._anonymous is None:
            raise AuthenticationFailed(FAILURE_MESSAGE)
        return self._anonymous

    def _match(self, authorization: str | None) -> Principal | None:
        """The principal of a well-formed, known key, else None; the same work either way."""
        token, well_formed = bearer_token(authorization)
        digest = hash_key(self._secret, token)
        stored, principal = self._principals.get(digest, (_NO_MATCH, None))
        matched = hmac.compare_digest(digest, stored)
        return principal if principal is not None and matched and well_formed else None

    def authenticate_admin(self, authorization: str | None) -> None:
        """Pass for the admin key; ``PermissionDenied`` for a tenant key; else 401."""
        token, well_formed = bearer_token(authorization)
        digest = hash_key(self._secret, token)
        is_admin = hmac.compare_digest(digest, self._admin_digest)
        if is_admin and well_formed:
            return
        if well_formed and digest in self._principals:
            raise PermissionDenied("The admin API needs the admin key, not a tenant key.")
        raise AuthenticationFailed(FAILURE_MESSAGE)
