"""The refusals the dashboard shows: requests the gateway answered with a 4xx of its own.

Counts over a window (per status and code, per tenant) read the hourly roll-up for whole hours
and the ``refusals`` rows for the partial hours at the ends, the way ``queries`` reads
usage; each row may stand for several refusals (``count``: a flood folded per minute). The
latest rows come straight from ``refusals``. Reads the tenants database through
``TenantStore.fetch``, in SQL both engines accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.tenants.backend import TenantStore
from gateway.tenants.ledger import REFUSAL_COLUMNS, RefusalRecord
from gateway.tenants.rollups import window_params, window_rows

UNAUTHENTICATED = "(no key)"
"""How refusals before a tenant was known are labelled."""


@dataclass(frozen=True, slots=True)
class RefusalCount:
    status: int
    code: str
    api: str
    count: int


async def refusal_counts(store: TenantStore, since: float, until: float) -> list[RefusalCount]:
    """Refusals in ``[since, until)`` per status, code and API, most first."""
    rows_sql = window_rows("status, code, api, count", "status, code, api, count",
                           "refusals_hourly", "refusals")
    rows = await store.fetch(
        f"SELECT status, code, api, sum(count) FROM ({rows_sql}) AS w GROUP BY 1, 2, 3 "
        "ORDER BY 4 DESC, 1, 2, 3", window_params(since, until))
    return [RefusalCount(*r) for r in rows]


async def refusals_by_tenant(store: TenantStore, since: float, until: float) -> dict[str, int]:
    """Refusals in ``[since, until)`` per tenant (``UNAUTHENTICATED`` for unknown callers)."""
    rows_sql = window_rows("nullif(tenant, '') AS tenant, count", "tenant, count",
                           "refusals_hourly", "refusals")
    rows = await store.fetch(
        f"SELECT coalesce(tenant, '{UNAUTHENTICATED}'), sum(count) FROM ({rows_sql}) AS w "
        "GROUP BY 1", window_params(since, until))
    return {str(r[0]): int(r[1]) for r in rows}


async def latest_refusals(
    store: TenantStore, *, tenant: str | None = None, since: float | None = None, limit: int = 50
) -> list[RefusalRecord]:
    """The newest refusal rows, newest first, of one tenant (or all) since ``since``."""
    clauses: list[str] = []
    params: list[Any] = []
    if tenant == UNAUTHENTICATED:
        clauses.append("tenant IS NULL")
    elif tenant is not None:
        clauses.append("tenant = ?")
        params.append(tenant)
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    rows = await store.fetch(
        f"SELECT {', '.join(REFUSAL_COLUMNS)} FROM refusals {where}ORDER BY id DESC LIMIT ?",
        (*params, max(0, limit)))
    return [RefusalRecord(**dict(zip(REFUSAL_COLUMNS, r, strict=True))) for r in rows]
