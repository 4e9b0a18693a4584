"""The ``gateway tenants …`` and ``gateway keys …`` commands, over the same store as the server.

``add_commands`` registers the sub-commands; each sets ``handler`` to a function
``(args, settings) -> exit status`` that opens the store from the settings, does one thing and
closes it. They need only the store: providers' keys may be absent, and a SQLite store (or key
secret) that does not exist yet is an error naming what to pass, never created. A running
gateway on the same store notices the change within ``tenants.reload_interval_s``; with
``[cluster] redis_url`` a command that changed something also publishes a ``keys`` notice, so
every replica reloads within a second.
A new key is printed once, to stdout; only its hash is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.core.config import Settings
from gateway.core.errors import GatewayError
from gateway.core.notices import publish_once
from gateway.core.postgres import Database, DatabaseError
from gateway.core.tenant_settings import LIMIT_FIELDS, Limits
from gateway.core.toml_table import ConfigError
from gateway.tenants.backend import TenantStore
from gateway.tenants.context import open_store, secret_matches
from gateway.tenants.keys import SECRET_FILE
from gateway.tenants.store import apply_limit_changes, check_limit_changes

Handler = Callable[[argparse.Namespace, Settings], int]
_LIMIT_FLAGS = {
    "requests_per_minute": ("--rpm", "requests per minute"),
    "tokens_per_minute": ("--tpm", "tokens per minute"),
    "max_concurrent": ("--concurrency", "requests in flight at once"),
    "daily_budget_usd": ("--daily-budget", "USD per UTC day"),
    "monthly_budget_usd": ("--monthly-budget", "USD per UTC month"),
}


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Register ``tenants create|list|update`` and ``keys create|list|revoke``.

    ``common`` adds the caller's shared options (``--config``) to every leaf command; each leaf
    sets ``handler(args, settings) -> int``.
    """
    tenants = subparsers.add_parser("tenants", help="create, list and update tenants")
    t_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = _leaf(t_sub, "create", "create a tenant", run_tenants_create, common)
    create.add_argument("name")
    create.add_argument("--init", action="store_true",
                        help="a new deployment: create the store (at the config's data_dir) "
                             "when there is none yet")
    _limit_arguments(create)
    listing = _leaf(t_sub, "list", "list tenants", run_tenants_list, common)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    update = _leaf(t_sub, "update", "change a tenant's limits or disable it", run_tenants_update,
                   common)
    update.add_argument("name")
    _limit_arguments(update)
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_true", default=None)
    state.add_argument("--enable", dest="disabled", action="store_false")

    keys = subparsers.add_parser("keys", help="create, list and revoke API keys")
    k_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = _leaf(k_sub, "create", "create a key for a tenant (printed once)", run_keys_create,
                   common)
    create.add_argument("tenant")
    create.add_argument("--name", default="", help="a label for the key")
    _limit_arguments(create)
    listing = _leaf(k_sub, "list", "list keys (prefixes, never the keys)", run_keys_list, common)
    listing.add_argument("--tenant")
    listing.add_argument("--active", action="store_true", help="hide revoked keys")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = _leaf(k_sub, "revoke", "revoke a key by its id", run_keys_revoke, common)
    revoke.add_argument("key_id")


def _leaf(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: Handler,
    common: Callable[[argparse.ArgumentParser], None] | None,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    parser.set_defaults(handler=handler, providers_needed=False)  # the store is all they touch
    if common is not None:
        common(parser)
    return parser


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    for field, (flag, unit) in _LIMIT_FLAGS.items():
        parser.add_argument(flag, dest=field, type=_limit_value, default=argparse.SUPPRESS,
                            metavar="N|none", help=f"limit: {unit} ('none' removes it)")


def _limit_value(text: str) -> int | float | None:
    if text.lower() in ("none", "unlimited"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _limit_changes(args: argparse.Namespace) -> dict[str, int | float | None]:
    return check_limit_changes({f: getattr(args, f) for f in LIMIT_FIELDS if hasattr(args, f)})


def run_tenants_create(args: argparse.Namespace, settings: Settings) -> int:
    async def act(store: TenantStore, secret: bytes) -> None:
        base = settings.tenants.default_limits
        limits = apply_limit_changes(base, _limit_changes(args))
        tenant = await store.create_tenant(args.name, limits)
        print(f"created tenant {tenant.name}: {_limits_text(tenant.limits.as_json())}")

    return _run(settings, act, notify=True, create_store=args.init)


def run_tenants_list(args: argparse.Namespace, settings: Settings) -> int:
    async def act(store: TenantStore, secret: bytes) -> None:
        rows = [t.as_json() for t in await store.list_tenants()]
        columns = ("name", "disabled", "limits", "created_at")
        _print_rows(rows, columns, as_json=args.json)

    return _run(settings, act)


def run_tenants_update(args: argparse.Namespace, settings: Settings) -> int:
    async def act(store: TenantStore, secret: bytes) -> None:
        tenant = await store.update_tenant(args.name, limits=_limit_changes(args),
                                           disabled=args.disabled)
        state = "disabled" if tenant.disabled else "enabled"
        print(f"updated tenant {tenant.name} ({state}): {_limits_text(tenant.limits.as_json())}")

    return _run(settings, act, notify=True)


def run_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    async def act(store: TenantStore, secret: bytes) -> None:
        limits = apply_limit_changes(Limits(), _limit_changes(args))
        record, key = await store.create_key(secret, args.tenant, name=args.name, limits=limits)
        print(f"created key {record.id} for tenant {record.tenant} (shown once, keep it):")
        print(key)

    return _run(settings, act, notify=True)


def run_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async def act(store: TenantStore, secret: bytes) -> None:
        keys = await store.list_keys(args.tenant, active_only=args.active)
        columns = ("id", "tenant", "prefix", "name", "created_at", "revoked_at")
        _print_rows([k.as_json() for k in keys], columns, as_json=args.json)

    return _run(settings, act)


def run_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def act(store: TenantStore, secret: bytes) -> None:
        record = await store.revoke_key(args.key_id)
        print(f"revoked key {record.id} ({record.prefix}…) of tenant {record.tenant}")

    return _run(settings, act, notify=True)


def existing_store(settings: Settings) -> str | None:
    """Why the store the server uses is not here, as one line saying what to pass; None when
    it is. An admin command never creates a store (or a key secret): run from the wrong folder,
    it would make a new, empty one whose keys no server accepts (``tenants create --init`` is
    how a new deployment makes its store before the first ``serve``). The shared database is
    named by its URL (and needs the key secret from the environment, which ``open_store``
    checks)."""
    if settings.cluster.shared_database:
        return None
    path = settings.tenants.database_path(settings.server.data_dir).resolve()
    where = ("pass the server's --config (its [server] data_dir), or run this in the folder "
             "`gateway serve` runs in")
    if not path.exists():
        return f"no gateway store at {path}: {where}"
    secret_file = settings.server.data_dir / SECRET_FILE
    if settings.tenants.key_secret is None and not secret_file.exists():
        return (f"no key secret: {settings.tenants.key_secret_env} is not set and "
                f"{secret_file.resolve()} does not exist; set {settings.tenants.key_secret_env} "
                f"to the server's, or {where}")
    return None


def _run(settings: Settings, act: Callable[[TenantStore, bytes], Awaitable[None]], *,
         notify: bool = False, create_store: bool = False) -> int:
    async def main() -> None:
        database = None
        if settings.cluster.shared_database:
            database = await Database.open(settings.cluster)
        try:
            store, secret = await open_store(settings.tenants, settings.server.data_dir, database)
            try:
                if not await secret_matches(store, secret):
                    raise ConfigError(
                        f"the key secret ({settings.tenants.key_secret_env}) is not the one this "
                        "store's keys were made with: keys made now would not authenticate")
                await act(store, secret)
            finally:
                await store.close()
        finally:
            if database is not None:
                await database.close()
        if notify and settings.cluster.redis_url is not None \
                and not await publish_once(settings.cluster, "keys"):
            print("warning: the other replicas were not notified (Redis unavailable); they "
                  "pick the change up at their next full re-read", file=sys.stderr)

    if not create_store and (problem := existing_store(settings)) is not None:
        print(f"gateway: error: {problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(main())
    except GatewayError as exc:
        print(f"gateway: error: {exc.message}", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _limits_text(limits: dict[str, Any]) -> str:
    chosen = [f"{name}={value}" for name, value in limits.items() if value is not None]
    return ", ".join(chosen) or "unlimited"


def _print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, as_json: bool) -> None:
    if as_json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    table = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(columns)]
    for line in ([list(columns)], table):
        for cells in line:
            print("  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return _limits_text(value)
    if isinstance(value, float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "-" if value is None else str(value)
