"""The seam between the tenants' users and their database: ``TenantStore``.

Two backends serve it: ``store.Store`` (one SQLite file, the embedded default) and
``pg_store.PgStore`` (the shared PostgreSQL database, when ``[cluster]`` names one). The
authenticator, the admin API, the CLI, the ledger and its queries see only this Protocol.
``fetch`` runs the read queries the two engines share (``?`` placeholders, portable SQL). A
Protocol only: touches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway.core.sqlite import Params
from gateway.core.tenant_settings import Limits
from gateway.tenants.store import ApiKey, Tenant


class TenantStore(Protocol):
    async def close(self) -> None: ...

    async def data_version(self) -> int:
        """Changes when another process may have changed something: a cheap "look again"."""
        ...

    async def revision(self) -> int: ...
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...

    async def claim_meta(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` has one already; the value stored either way."""
        ...

    async def create_tenant(self, name: str, limits: Limits | None = None) -> Tenant: ...
    async def get_tenant(self, name: str) -> Tenant: ...
    async def list_tenants(self) -> list[Tenant]: ...
    async def count_tenants(self) -> int: ...
    async def update_tenant(
        self, name: str, *, limits: Mapping[str, int | float | None] | None = None,
        disabled: bool | None = None,
    ) -> Tenant: ...
    async def delete_tenant(self, name: str) -> None: ...

    async def create_key(
        self, secret: bytes, tenant: str, *, name: str = "", limits: Limits | None = None
    ) -> tuple[ApiKey, str]: ...
    async def list_keys(
        self, tenant: str | None = None, *, active_only: bool = False
    ) -> list[ApiKey]: ...
    async def get_key(self, key_id: str) -> ApiKey: ...
    async def revoke_key(self, key_id: str) -> ApiKey: ...

    async def write_usage(
        self, rows: Sequence[tuple[Any, ...]], failed: Sequence[tuple[Any, ...]] = (),
        refusals: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """Append ledger rows (``USAGE_COLUMNS`` order), failed attempts (``FAILED_COLUMNS``)
        and refusals (``REFUSAL_COLUMNS``), and fold them into the daily and hourly roll-ups,
        in one transaction."""
        ...

    async def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """The rows of a read query written in the SQL both engines speak (``?`` placeholders
        with a sequence, ``:name`` ones with a mapping)."""
        ...
