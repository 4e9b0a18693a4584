"""The ``[tenants]`` configuration section, parsed into frozen values.

``parse_tenants`` receives the table and the environment mapping that ``gateway.core.config`` passes
it; it never reads ``os.environ`` itself. Secrets (the admin key, the key-hashing secret) come only
from the environment variables named here and are kept out of ``repr``.

    [tenants]
    database = "gateway.sqlite3"        # relative to server.data_dir
    admin_key_env = "GATEWAY_ADMIN_KEY"
    key_secret_env = "GATEWAY_KEY_SECRET"
    tokenizer = ""                      # a tokenizer.json to count prompt tokens exactly (slower)
    default_max_tokens = 1024           # completion estimate when a request sets no max_tokens
    budget_soft_share = 0.9             # share of a budget where the soft action starts
    budget_soft_action = "downgrade"    # or "refuse"
    reload_interval_s = 1.0             # how often the CLI's changes are picked up
    bootstrap = true                    # first start: create tenant "default" and print a key

    [tenants.default_limits]            # limits of tenants created without explicit ones
    requests_per_minute = 600
    tokens_per_minute = 200000
    max_concurrent = 20
    daily_budget_usd = 10.0
    monthly_budget_usd = 100.0

    [tenants.ledger]
    flush_interval_s = 1.0
    batch_rows = 500
    max_pending_rows = 50000
    refusal_rows_per_minute = 120       # refusals kept one by one per tenant a minute; the
                                        # rest (a flood of bad keys, say) are counted, not kept
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.toml_table import ConfigError, Table

SOFT_ACTIONS = ("downgrade", "refuse")
MIN_SECRET_CHARS = 16


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one tenant or one key; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None

    @property
    def is_unlimited(self) -> bool:
        return all(getattr(self, name) is None for name in LIMIT_FIELDS)

    def as_json(self) -> dict[str, int | float | None]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "daily_budget_usd",
    "monthly_budget_usd",
)
INT_LIMITS = frozenset({"requests_per_minute", "tokens_per_minute", "max_concurrent"})


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    flush_interval_s: float = 1.0
    batch_rows: int = 500
    max_pending_rows: int = 50_000
    refusal_rows_per_minute: int = 120
    """Refusals kept row by row per tenant (and for unauthenticated callers) each minute; the
    rest of that minute's are folded into counted rows (``Ledger.refuse``)."""


@dataclass(frozen=True, slots=True)
class TenantSettings:
    database: Path = Path("gateway.sqlite3")
    admin_key_env: str = "GATEWAY_ADMIN_KEY"
    key_secret_env: str = "GATEWAY_KEY_SECRET"
    admin_key: str | None = field(default=None, repr=False)
    key_secret: str | None = field(default=None, repr=False)
    tokenizer: Path | None = None
    """None: estimate prompt tokens from the text's length (``TokenCounter``), no tokenizer."""
    default_max_tokens: int = 1024
    budget_soft_share: float = 0.9
    budget_soft_action: str = "downgrade"
    reload_interval_s: float = 1.0
    bootstrap: bool = True
    require_keys: bool = True
    """False: requests without a valid key run as the ``anonymous`` tenant (local use only)."""
    default_limits: Limits = Limits()
    ledger: LedgerSettings = LedgerSettings()

    def database_path(self, data_dir: Path) -> Path:
        """The SQLite file: ``database`` as given when absolute, else inside ``data_dir``."""
        return data_dir / self.database  # an absolute path stays itself


def parse_tenants(t: Table, env: Mapping[str, str], base_dir: Path) -> TenantSettings:
    """Validate the ``[tenants]`` table; secrets come from ``env`` under the configured names."""
    admin_key_env = t.get("admin_key_env", str, "GATEWAY_ADMIN_KEY")
    key_secret_env = t.get("key_secret_env", str, "GATEWAY_KEY_SECRET")
    tokenizer = t.get("tokenizer", str, "")
    share = t.positive("budget_soft_share", 0.9)
    if share > 1:
        raise t.fail("budget_soft_share", "a share from 0 to 1")
    settings = TenantSettings(
        database=Path(t.get("database", str, "gateway.sqlite3")),
        admin_key_env=admin_key_env,
        key_secret_env=key_secret_env,
        admin_key=env_secret(t, "admin_key_env", admin_key_env, env),
        key_secret=env_secret(t, "key_secret_env", key_secret_env, env),
        tokenizer=base_dir / tokenizer if tokenizer else None,  # an absolute path stays itself
        default_max_tokens=t.count("default_max_tokens", 1024),
        budget_soft_share=share,
        budget_soft_action=t.choice("budget_soft_action", SOFT_ACTIONS, "downgrade"),
        reload_interval_s=t.positive("reload_interval_s", 1.0),
        bootstrap=t.get("bootstrap", bool, True),
        require_keys=t.get("require_keys", bool, True),
        default_limits=parse_limits(t.table("default_limits")),
        ledger=_ledger(t.table("ledger")),
    )
    t.reject_unknown()
    return settings


def parse_limits(t: Table) -> Limits:
    """A limits table; every key is optional and an absent key means unlimited."""
    limits = Limits(
        requests_per_minute=_optional_count(t, "requests_per_minute"),
        tokens_per_minute=_optional_count(t, "tokens_per_minute"),
        max_concurrent=_optional_count(t, "max_concurrent"),
        daily_budget_usd=_optional_money(t, "daily_budget_usd"),
        monthly_budget_usd=_optional_money(t, "monthly_budget_usd"),
    )
    t.reject_unknown()
    return limits


def _ledger(t: Table) -> LedgerSettings:
    settings = LedgerSettings(
        flush_interval_s=t.positive("flush_interval_s", 1.0),
        batch_rows=t.count("batch_rows", 500),
        max_pending_rows=t.count("max_pending_rows", 50_000),
        refusal_rows_per_minute=t.count("refusal_rows_per_minute", 120),
    )
    t.reject_unknown()
    if settings.max_pending_rows < settings.batch_rows:
        raise t.fail("max_pending_rows", "at least batch_rows")
    return settings


def _optional_count(t: Table, name: str) -> int | None:
    default: int | None = None
    value = t.get(name, (int,), default)
    if value is not None and value < 1:
        raise t.fail(name, "an integer of 1 or more")
    return value


def _optional_money(t: Table, name: str) -> float | None:
    default: float | None = None
    value = t.get(name, (float,), default)
    if value is not None and value < 0:
        raise t.fail(name, "an amount of 0 or more")
    return value


def env_secret(t: Table, key: str, name: str, env: Mapping[str, str]) -> str | None:
    """The secret in environment variable ``name`` (named by ``key``), None when unset; a
    value shorter than ``MIN_SECRET_CHARS`` fails."""
    value = env.get(name) or None
    if value is not None and len(value) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{t.key(key)}: environment variable {name} must hold at least "
            f"{MIN_SECRET_CHARS} characters"
        )
    return value


