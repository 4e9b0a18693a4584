"""Wiring: the tenants' cleanup context, the app keys it fills, and the first-start bootstrap.

``configure(app, settings)`` registers ``tenants_context``, which opens the store, loads keys and
spend into memory, starts the ledger writer and the reload watcher, and on exit stops the watcher,
writes the ledger out and closes the database, in that order.

Changes made through the admin API take effect at once (the handler reloads). Changes made by the
CLI, another process, are noticed by ``watch_changes`` within ``reload_interval_s`` (default 1 s):
it polls ``PRAGMA data_version`` (free unless another connection committed) and reloads only when
``meta.revision`` moved.

First start: with no tenant at all, a ``default`` tenant and a key are created and the key is
printed once to stdout (never to the log); without ``GATEWAY_ADMIN_KEY`` an admin key is generated,
its hash stored and the key printed once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from gateway.core.config import Settings
from gateway.core.lifecycle import stop_task
from gateway.core.tenant_settings import Limits, TenantSettings
from gateway.tenants.auth import Authenticator, Principal
from gateway.tenants.counters import MemoryCounterStore
from gateway.tenants.keys import generate_admin_key, hash_key, load_or_create_secret, secret_check
from gateway.tenants.ledger import Ledger, month_spend
from gateway.tenants.quotas import Admission
from gateway.tenants.store import Store
from gateway.tenants.tokens import TokenCounter

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
ANONYMOUS_TENANT = "anonymous"
_ADMIN_DIGEST = "admin_key_digest"
_SECRET_CHECK = "key_secret_check"


@dataclass(frozen=True, slots=True)
class TenantsConfig:
    """What the cleanup context needs: the section, the data folder, the URL to show users."""

    settings: TenantSettings
    data_dir: Path
    public_url: str = "http://127.0.0.1:8080"


CONFIG_KEY = web.AppKey("tenants_config", TenantsConfig)
STORE_KEY = web.AppKey("tenants_store", Store)
AUTH_KEY = web.AppKey("tenants_auth", Authenticator)
ADMISSION_KEY = web.AppKey("tenants_admission", Admission)
LEDGER_KEY = web.AppKey("tenants_ledger", Ledger)
PRINCIPAL = web.RequestKey("principal", Principal)
"""On a request: who is calling, once the API key was checked (a refusal then names the
tenant)."""
RELOAD_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("tenants_reload_task", asyncio.Task)


def configure(app: web.Application, settings: Settings) -> None:
    """Put the tenants' configuration on ``app`` and register ``tenants_context``."""
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
    app[CONFIG_KEY] = TenantsConfig(
        settings=settings.tenants,
        data_dir=settings.server.data_dir,
        public_url=f"http://{host}:{settings.server.port}",
    )
    app.cleanup_ctx.append(tenants_context)


async def tenants_context(app: web.Application) -> AsyncIterator[None]:
    """The store, the in-memory auth and admission, the ledger writer and the reload watcher."""
    config = app[CONFIG_KEY]
    store, secret = await open_store(config.settings, config.data_dir)
    try:
        auth = Authenticator(
            secret, await admin_digest(store, config.settings, secret), anonymous(config.settings)
        )
        if config.settings.bootstrap and await store.count_tenants() == 0:
            await create_default_tenant(store, config, secret)
        await auth.reload(store)
        admission = await load_admission(store, config.settings)
        ledger = Ledger(store, config.settings.ledger)
        ledger.start()
        watcher = asyncio.create_task(
            watch_changes(store, auth, config.settings.reload_interval_s), name="tenants-reload"
        )
        app[STORE_KEY], app[AUTH_KEY], app[ADMISSION_KEY] = store, auth, admission
        app[LEDGER_KEY], app[RELOAD_TASK_KEY] = ledger, watcher
        try:
            yield
        finally:
            await stop_task(watcher)
            await ledger.close()
    finally:
        await store.close()


def anonymous(settings: TenantSettings) -> Principal | None:
    """The principal of keyless requests when ``require_keys`` is off: the default limits."""
    if settings.require_keys:
        return None
    return Principal(ANONYMOUS_TENANT, "-", "-", settings.default_limits, Limits())


async def open_store(settings: TenantSettings, data_dir: Path) -> tuple[Store, bytes]:
    """The store and the key-hashing secret; warns when the secret is not the keys' secret."""
    secret = load_or_create_secret(settings.key_secret, data_dir, settings.key_secret_env)
    store = await Store.open(settings.database_path(data_dir))
    try:
        check = secret_check(secret)
        stored = await store.get_meta(_SECRET_CHECK)
        if stored is None:
            await store.set_meta(_SECRET_CHECK, check)
        elif stored != check:
            log.error(
                "the key-hashing secret (%s) differs from the one the stored keys were made "
                "with: existing API keys will not authenticate", settings.key_secret_env,
            )
    except BaseException:
        await store.close()
        raise
    return store, secret


async def secret_matches(store: Store, secret: bytes) -> bool:
    """Whether ``secret`` is the one the stored keys were made with (or none is recorded)."""
    stored = await store.get_meta(_SECRET_CHECK)
    return stored is None or stored == secret_check(secret)


async def admin_digest(store: Store, settings: TenantSettings, secret: bytes) -> str:
    """The admin key's hash: from the environment, else stored, else generated and shown once."""
    if settings.admin_key:
        return hash_key(secret, settings.admin_key)
    stored = await store.get_meta(_ADMIN_DIGEST)
    if stored is not None:
        return stored
    key = generate_admin_key()
    digest = hash_key(secret, key)
    await store.set_meta(_ADMIN_DIGEST, digest)
    announce(
        f"Admin key (shown once; set {settings.admin_key_env} to choose your own): {key}"
    )
    log.warning("%s is not set: generated an admin key and printed it once to stdout",
                settings.admin_key_env)
    return digest


async def create_default_tenant(store: Store, config: TenantsConfig, secret: bytes) -> None:
    """Create tenant ``default`` with a key and print the key once, with how to use it."""
    await store.create_tenant(DEFAULT_TENANT, config.settings.default_limits)
    record, key = await store.create_key(secret, DEFAULT_TENANT, name="first start")
    announce(
        f"API key for tenant '{DEFAULT_TENANT}' (shown once, keep it): {key}\n"
        f"  curl {config.public_url}/v1/chat/completions -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' "
        "-d '{\"model\": \"auto\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'\n"
        f"  or: OpenAI(base_url=\"{config.public_url}/v1\", api_key=\"{key}\")"
    )
    log.info("first start: created tenant %s with key %s", DEFAULT_TENANT, record.id)


def announce(text: str) -> None:
    """Show a secret once to the operator: stdout only, never the log."""
    print(text, flush=True)


async def load_admission(store: Store, settings: TenantSettings) -> Admission:
    """Admission over in-memory counters, starting from this month's spend in the ledger."""
    admission = Admission(
        MemoryCounterStore(),
        TokenCounter.load(settings.tokenizer),
        default_max_tokens=settings.default_max_tokens,
        soft_share=settings.budget_soft_share,
        soft_action=settings.budget_soft_action,
    )
    for row in await month_spend(store):
        midday = datetime.strptime(row.day, "%Y-%m-%d").replace(hour=12, tzinfo=UTC)
        await admission.add_spend(row.tenant, row.key_id, row.cost, midday.timestamp())
    return admission


async def watch_changes(
    store: Store, auth: Authenticator, interval_s: float, reloaded: asyncio.Event | None = None
) -> None:
    """Reload keys and limits when another process (the CLI) changed them.

    ``reloaded`` is set after each reload, for whoever needs to wait for one (tests).
    """
    version: int | None = None
    while True:
        await asyncio.sleep(interval_s)
        try:
            current = await store.data_version()
            if current == version:
                continue
            version = current
            latest = await store.revision()
            if latest != auth.revision:
                await auth.reload(store)
                log.info("tenants or keys changed (revision %d): reloaded", latest)
                if reloaded is not None:
                    reloaded.set()
        except sqlite3.Error as exc:
            log.warning("tenants reload failed, will retry: %s", exc)
