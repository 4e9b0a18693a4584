"""The ``[cluster]`` configuration section: what several replicas share.

    [cluster]
    database_url_env = "GATEWAY_DATABASE_URL"   # the variable holding postgresql://user:pw@host/db
    database_url = ""                           # or the URL itself, when it holds no password
    database_pool_size = 10
    database_timeout_s = 5.0                    # connecting and each statement

With no database URL everything stays on the embedded SQLite files. The URL may carry a
password, so it is kept out of ``repr`` and handed to the log redaction as a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.toml_table import ConfigError, Table

DATABASE_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    database_url: str | None = field(default=None, repr=False)
    database_pool_size: int = 10
    database_timeout_s: float = 5.0

    @property
    def shared_database(self) -> bool:
        return self.database_url is not None


def parse_cluster(t: Table, env: Mapping[str, str]) -> ClusterSettings:
    """Validate the ``[cluster]`` table's database keys; the URL may come from ``env``."""
    url_env = t.get("database_url_env", str, "GATEWAY_DATABASE_URL")
    url = env.get(url_env) or t.get("database_url", str, "") or None
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in DATABASE_SCHEMES or not parts.path.strip("/"):
            # The value is not quoted back: it may hold a password.
            name = t.key("database_url" if "database_url" in t.data else "database_url_env")
            raise ConfigError(
                f"{name}: expected a URL like postgresql://user:password@host:5432/database"
            )
        if parts.password and "database_url" in t.data and not env.get(url_env):
            raise ConfigError(
                f"{t.key('database_url')}: secrets do not go in the file; use {url_env}"
            )
    return ClusterSettings(
        database_url=url,
        database_pool_size=t.count("database_pool_size", 10),
        database_timeout_s=t.positive("database_timeout_s", 5.0),
    )
