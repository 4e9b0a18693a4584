"""The ``[cluster]`` configuration section: what several replicas share, parsed into frozen values.

Without ``redis_url`` a gateway is one replica on its own: in-memory counters, no notices,
which is the embedded default ``make run`` needs. ``parse_cluster`` receives the table and the
environment mapping that ``gateway.core.config`` passes it; it never reads ``os.environ`` itself.
A Redis URL may carry a password, so a URL with one is refused in the file and taken only from
the environment variable named by ``redis_url_env``; the URL is kept out of ``repr`` and logs
show it redacted.

    [cluster]
    redis_url = "redis://127.0.0.1:6379/0"  # or set GATEWAY_REDIS_URL (wins over the file)
    redis_url_env = "GATEWAY_REDIS_URL"
    redis_mode = "fail_open"          # Redis down: admit on local counters ("fail_closed": 503)
    redis_timeout_ms = 500            # one command's deadline, then the mode applies
    redis_connect_timeout_ms = 1000
    redis_pool_size = 32              # connections to Redis per replica (a burst waits for one)
    redis_retry_interval_s = 1.0      # after a failure, Redis is tried again this much later
    lease_s = 30.0                    # a reservation's lease, renewed while its request runs
    resync_interval_s = 30.0          # full re-read of keys and limits, behind the notices
    key_prefix = "gw"                 # the namespace of every Redis key and channel
    database_url_env = "GATEWAY_DATABASE_URL"   # postgresql://user:password@host:5432/db
    database_url = ""                 # or the URL itself, when it holds no password
    database_pool_size = 10           # connections to PostgreSQL per replica
    database_timeout_s = 5.0          # connecting, and each statement

With ``database_url`` (or its variable) tenants, keys, the ledger, routing signals and the
cache's entries live in PostgreSQL, shared by every replica (``gateway.core.postgres``); without
it they stay in this replica's SQLite files. Like Redis's, a database URL with a password is
refused in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit, urlunsplit

from gateway.core.toml_table import ConfigError, Table

REDIS_MODES = ("fail_open", "fail_closed")
REDIS_SCHEMES = ("redis", "rediss", "unix")
DATABASE_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    redis_url: str | None = field(default=None, repr=False)
    """None: this replica stands alone (in-memory counters, no notices)."""
    redis_url_env: str = "GATEWAY_REDIS_URL"
    redis_mode: str = "fail_open"
    redis_timeout_ms: float = 500.0
    redis_connect_timeout_ms: float = 1000.0
    redis_pool_size: int = 32
    redis_retry_interval_s: float = 1.0
    lease_s: float = 30.0
    resync_interval_s: float = 30.0
    key_prefix: str = "gw"
    database_url: str | None = field(default=None, repr=False)
    """None: tenants, the ledger, signals and the cache stay in this replica's SQLite files."""
    database_url_env: str = "GATEWAY_DATABASE_URL"
    database_pool_size: int = 10
    database_timeout_s: float = 5.0

    @property
    def shared_database(self) -> bool:
        return self.database_url is not None

    @property
    def fail_open(self) -> bool:
        return self.redis_mode == "fail_open"

    @property
    def redis_shown(self) -> str:
        """The URL without its password, for logs and messages."""
        return redact_url(self.redis_url or "")


def parse_cluster(t: Table, env: Mapping[str, str]) -> ClusterSettings:
    """Validate the ``[cluster]`` table; the URL from ``env`` wins over the file's."""
    url_env = t.get("redis_url_env", str, "GATEWAY_REDIS_URL")
    url = _url(t, env, "redis_url", url_env, "a URL starting redis://, rediss:// or unix://",
               lambda parts: parts.scheme in REDIS_SCHEMES)
    database_env = t.get("database_url_env", str, "GATEWAY_DATABASE_URL")
    prefix = t.get("key_prefix", str, "gw")
    if not prefix or any(c in prefix for c in "{}: "):
        raise t.fail("key_prefix", "a non-empty name without braces, colons or spaces")
    settings = ClusterSettings(
        redis_url=url,
        redis_url_env=url_env,
        redis_mode=t.choice("redis_mode", REDIS_MODES, "fail_open"),
        redis_timeout_ms=t.positive("redis_timeout_ms", 500.0),
        redis_connect_timeout_ms=t.positive("redis_connect_timeout_ms", 1000.0),
        redis_pool_size=t.count("redis_pool_size", 32),
        redis_retry_interval_s=t.positive("redis_retry_interval_s", 1.0),
        lease_s=t.positive("lease_s", 30.0),
        resync_interval_s=t.positive("resync_interval_s", 30.0),
        key_prefix=prefix,
        database_url=_url(t, env, "database_url", database_env,
                          "a URL like postgresql://user:password@host:5432/database",
                          lambda parts: parts.scheme in DATABASE_SCHEMES
                          and bool(parts.path.strip("/"))),
        database_url_env=database_env,
        database_pool_size=t.count("database_pool_size", 10),
        database_timeout_s=t.positive("database_timeout_s", 5.0),
    )
    t.reject_unknown()
    return settings


def _url(t: Table, env: Mapping[str, str], name: str, url_env: str, expected: str,
         valid: Callable[[SplitResult], bool]) -> str | None:
    """The URL ``name``: from the environment variable ``url_env``, else the file, which may
    not hold a password; a ``ConfigError`` saying what is ``expected`` unless ``valid``."""
    wrong = ConfigError(f"{t.key(name)} (or {url_env}): expected {expected}")
    in_file = t.get(name, str, "")
    if in_file and _split(in_file, wrong).password:
        raise ConfigError(f"{t.key(name)}: secrets do not go in the file; put the URL with its "
                          f"password in environment variable {url_env}")
    url = env.get(url_env) or in_file or None
    if url is not None and not valid(_split(url, wrong)):
        raise wrong
    return url


def _split(url: str, wrong: ConfigError) -> SplitResult:
    """``url``'s parts, or ``wrong`` (which never quotes the value back: it may hold a
    password) for a URL that does not parse: a bad IPv6 host, a port not from 0 to 65535."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # checked on access only
    except ValueError:
        raise wrong from None
    return parts


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.hostname or ""
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
