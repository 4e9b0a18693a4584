"""Wiring: the tenants' cleanup context, the app keys it fills, and the first-start bootstrap.

``configure(app, settings)`` registers ``tenants_context``, which opens the store, loads keys and
spend into memory, starts the ledger writer and the reload watcher, and on exit stops the watcher,
writes the ledger out and closes the database, in that order.

Changes made through the admin API take effect at once (the handler reloads). Changes made by the
CLI, another process or another replica, are noticed by ``watch_changes`` within
``reload_interval_s`` (default 1 s): it polls the store's ``data_version`` (SQLite's
``PRAGMA data_version``, free unless another connection committed; PostgreSQL's revision row)
and reloads only when ``meta.revision`` moved. With a shared database (``[cluster]``) the store
is PostgreSQL's (``pg_store.PgStore``), over the pool of ``gateway.core.postgres``.

With ``[cluster] redis_url`` the counters live in Redis (``RedisCounterStore``, its lease renewal
a task owned here), and keys and limits follow the peers: a ``keys`` notice from another
replica reloads them at once, a reconnection of the notices listener reloads them (notices may
have been missed), and so does every ``resync_interval_s`` as the backstop.

First start: with no tenant at all, a ``default`` tenant and a key are created and the key is
printed once to stdout (never to the log); without ``GATEWAY_ADMIN_KEY`` an admin key is generated,
its hash stored and the key printed once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from gateway.core.cluster import ClusterSettings
from gateway.core.config import Settings
from gateway.core.errors import InvalidRequest
from gateway.core.lifecycle import stop_task
from gateway.core.notices import NOTICES, Notice, Notices
from gateway.core.postgres import DATABASE, STORAGE_ERRORS, Database
from gateway.core.redis_link import REDIS_LINK, RedisUnavailable
from gateway.core.tenant_settings import Limits, TenantSettings
from gateway.core.toml_table import ConfigError
from gateway.tenants.auth import Authenticator, Principal
from gateway.tenants.backend import TenantStore
from gateway.tenants.counters import CounterStore, MemoryCounterStore
from gateway.tenants.keys import generate_admin_key, hash_key, load_or_create_secret, secret_check
from gateway.tenants.ledger import Ledger, month_spend
from gateway.tenants.pg_store import PgStore
from gateway.tenants.quotas import Admission, Periods
from gateway.tenants.redis_counters import RedisCounterStore
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
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    cost_per_token: float = 0.0
    """The dearest model's price per token: what a request reserves against its budgets when
    the counters are shared (an upper bound, so budgets are not overspent)."""


CONFIG_KEY = web.AppKey("tenants_config", TenantsConfig)
STORE_KEY = web.AppKey("tenants_store", TenantStore)
AUTH_KEY = web.AppKey("tenants_auth", Authenticator)
ADMISSION_KEY = web.AppKey("tenants_admission", Admission)
LEDGER_KEY = web.AppKey("tenants_ledger", Ledger)
PRINCIPAL = web.RequestKey("principal", Principal)
"""On a request: who is calling, once the API key was checked (a refusal then names the
tenant)."""
RELOAD_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("tenants_reload_task", asyncio.Task)
COUNTERS_KEY: web.AppKey[CounterStore] = web.AppKey("tenants_counters")


def tenants_config(settings: Settings) -> TenantsConfig:
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
    return TenantsConfig(
        settings=settings.tenants,
        data_dir=settings.server.data_dir,
        public_url=f"http://{host}:{settings.server.port}",
        cluster=settings.cluster,
        cost_per_token=_dearest_price_per_mtok(settings) / 1e6,
    )


def _dearest_price_per_mtok(settings: Settings) -> float:
    """The most any model charges for a token. A 1-hour cache write counts only at Anthropic,
    the one provider that makes them: elsewhere its price, left to its default of twice the
    input price, would raise every reservation for writes that never happen."""
    prices = [max(m.input_price_per_mtok, m.output_price_per_mtok, m.cache_write_price_per_mtok,
                  m.cache_write_1h_price_per_mtok
                  if settings.provider(m.provider).kind == "anthropic" else 0.0)
              for m in settings.models]
    return max(prices, default=0.0)


def configure(app: web.Application, settings: Settings) -> None:
    """Put the tenants' configuration on ``app`` and register ``tenants_context``."""
    app[CONFIG_KEY] = tenants_config(settings)
    app.cleanup_ctx.append(tenants_context)


async def first_start(settings: Settings) -> None:
    """What several processes of one node do once, before any of them starts: the shared
    database's schema, the admin key's hash and tenant ``default``, so each key is printed
    exactly once (by the supervisor) and the processes then find them made."""
    config = tenants_config(settings)
    database = (await Database.open(settings.cluster) if settings.cluster.shared_database
                else None)
    try:
        store, secret = await open_store(config.settings, config.data_dir, database)
        try:
            await first_keys(store, config, secret)
        finally:
            await store.close()
    finally:
        if database is not None:
            await database.close()


async def first_keys(store: TenantStore, config: TenantsConfig, secret: bytes) -> str:
    """The admin key's hash (generated and shown once if none is set or stored) and, when
    bootstrapping an empty store, tenant ``default`` with its first key (shown once)."""
    digest = await admin_digest(store, config.settings, secret)
    if config.settings.bootstrap and await store.count_tenants() == 0:
        await create_default_tenant(store, config, secret)
    return digest


async def tenants_context(app: web.Application) -> AsyncIterator[None]:
    """The store, the in-memory auth and admission, the ledger writer and the reload watcher."""
    config = app[CONFIG_KEY]
    store, secret = await open_store(config.settings, config.data_dir, app.get(DATABASE))
    tasks: list[asyncio.Task[None]] = []
    try:
        auth = Authenticator(
            secret, await first_keys(store, config, secret), anonymous(config.settings)
        )
        await auth.reload(store)
        admission = await load_admission(store, config.settings, shared_counters(app),
                                         config.cost_per_token)
        ledger = Ledger(store, config.settings.ledger)
        ledger.start()
        tasks.append(asyncio.create_task(
            watch_changes(store, auth, config.settings.reload_interval_s), name="tenants-reload"
        ))
        tasks += follow_peers(app, store, auth, admission)
        app[STORE_KEY], app[AUTH_KEY], app[ADMISSION_KEY] = store, auth, admission
        app[COUNTERS_KEY] = admission.counters
        app[LEDGER_KEY], app[RELOAD_TASK_KEY] = ledger, tasks[0]
        try:
            yield
        finally:
            for task in reversed(tasks):
                await stop_task(task)
            await ledger.close()
    finally:
        await store.close()


def shared_counters(app: web.Application) -> RedisCounterStore | None:
    """The Redis counters when ``[cluster] redis_url`` is set (the link is open), else None."""
    link, config = app.get(REDIS_LINK), app[CONFIG_KEY]
    if link is None:
        return None
    return RedisCounterStore(link, lease_s=config.cluster.lease_s,
                             fail_open=config.cluster.fail_open)


def follow_peers(app: web.Application, store: TenantStore, auth: Authenticator,
                 admission: Admission) -> list[asyncio.Task[None]]:
    """With Redis: reload on the peers' ``keys`` notices, after reconnections and every
    ``resync_interval_s``; renew the leases this replica holds. The tasks, for the caller."""
    config = app[CONFIG_KEY]
    notices = app.get(NOTICES)
    if notices is None or notices.link is None:
        return []

    async def reload(notice: Notice | None = None) -> None:
        await auth.reload(store)
        if notice is not None:
            log.info("keys or limits changed on replica %s: reloaded", notice.origin)

    notices.subscribe("keys", reload)
    notices.on_resync(reload)
    tasks = [asyncio.create_task(
        resync_forever(reload, config.cluster.resync_interval_s), name="tenants-resync")]
    if isinstance(admission.counters, RedisCounterStore):
        tasks.append(asyncio.create_task(admission.counters.renew_forever(),
                                         name="tenants-lease-renewal"))
    return tasks


async def resync_forever(reload: Callable[[], Awaitable[None]], interval_s: float) -> None:
    """The backstop behind the notices: a full re-read every ``interval_s``."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await reload()
        except STORAGE_ERRORS as exc:
            log.warning("periodic re-read of keys and limits failed, will retry: %s", exc)


async def publish_change(notices: Notices | None) -> None:
    """Tell the peers that keys or limits changed here (the admin API calls this)."""
    if notices is not None:
        await notices.publish("keys")


def anonymous(settings: TenantSettings) -> Principal | None:
    """The principal of keyless requests when ``require_keys`` is off: the default limits."""
    if settings.require_keys:
        return None
    return Principal(ANONYMOUS_TENANT, "-", "-", settings.default_limits, Limits())


async def open_store(
    settings: TenantSettings, data_dir: Path, database: Database | None = None
) -> tuple[TenantStore, bytes]:
    """The store (the shared ``database`` when given, else the SQLite file) and the key-hashing
    secret; warns when the secret is not the one the stored keys were made with."""
    if database is not None and not settings.key_secret:
        raise ConfigError(
            f"tenants.key_secret_env: with a shared database every replica must hash keys with "
            f"the same secret; set {settings.key_secret_env}"
        )
    secret = load_or_create_secret(settings.key_secret, data_dir, settings.key_secret_env)
    store: TenantStore = (
        PgStore(database) if database is not None
        else await Store.open(settings.database_path(data_dir))
    )
    try:
        check = secret_check(secret)
        stored = await store.claim_meta(_SECRET_CHECK, check)
        if stored != check:
            log.error(
                "the key-hashing secret (%s) differs from the one the stored keys were made "
                "with: existing API keys will not authenticate", settings.key_secret_env,
            )
    except BaseException:
        await store.close()
        raise
    return store, secret


async def secret_matches(store: TenantStore, secret: bytes) -> bool:
    """Whether ``secret`` is the one the stored keys were made with (or none is recorded)."""
    stored = await store.get_meta(_SECRET_CHECK)
    return stored is None or stored == secret_check(secret)


async def admin_digest(store: TenantStore, settings: TenantSettings, secret: bytes) -> str:
    """The admin key's hash: from the environment, else stored, else generated and shown once."""
    if settings.admin_key:
        return hash_key(secret, settings.admin_key)
    stored = await store.get_meta(_ADMIN_DIGEST)
    if stored is not None:
        return stored
    key = generate_admin_key()
    digest = hash_key(secret, key)
    stored = await store.claim_meta(_ADMIN_DIGEST, digest)
    if stored != digest:  # another replica starting at the same time generated one first
        return stored
    announce(
        f"Admin key (shown once; set {settings.admin_key_env} to choose your own): {key}"
    )
    log.warning("%s is not set: generated an admin key and printed it once to stdout",
                settings.admin_key_env)
    return digest


async def create_default_tenant(store: TenantStore, config: TenantsConfig, secret: bytes) -> None:
    """Create tenant ``default`` with a key and print the key once, with how to use it."""
    try:
        await store.create_tenant(DEFAULT_TENANT, config.settings.default_limits)
    except InvalidRequest as exc:
        if exc.code != "tenant_exists":
            raise
        return  # another replica starting at the same time made it (and showed its key)
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


async def load_admission(store: TenantStore, settings: TenantSettings,
                         shared: RedisCounterStore | None = None,
                         cost_per_token: float = 0.0) -> Admission:
    """Admission over ``shared`` counters (Redis) when given, else in-memory ones; starting
    from this month's spend in the ledger (on Redis, only the first replica of the month
    copies it). ``cost_per_token`` prices the budget reservations of shared counters."""
    counters: CounterStore = MemoryCounterStore()
    seed = True
    if shared is not None:
        counters = shared
        try:
            await shared.load_scripts()
            seed = await shared.claim_seed(Periods.of(time.time()).month)
        except RedisUnavailable:
            seed = False  # the configured mode applies until Redis answers
    admission = Admission(
        counters,
        TokenCounter.load(settings.tokenizer),
        default_max_tokens=settings.default_max_tokens,
        soft_share=settings.budget_soft_share,
        soft_action=settings.budget_soft_action,
        cost_per_token=cost_per_token if shared is not None else 0.0,
    )
    if seed:
        try:
            for row in await month_spend(store):
                midday = datetime.strptime(row.day, "%Y-%m-%d").replace(hour=12, tzinfo=UTC)
                await admission.add_spend(row.tenant, row.key_id, row.cost, midday.timestamp())
        except RedisUnavailable as exc:
            log.warning("this month's spend was not copied into Redis (%s)", exc)
    return admission


async def watch_changes(
    store: TenantStore, auth: Authenticator, interval_s: float,
    reloaded: asyncio.Event | None = None,
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
        except STORAGE_ERRORS as exc:
            log.warning("tenants reload failed, will retry: %s", exc)
