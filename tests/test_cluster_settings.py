"""Tests for gateway/core/cluster.py: the [cluster] table."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.__main__ import _secrets
from gateway.core.cluster import ClusterSettings, redact_url
from gateway.core.toml_table import ConfigError
from tests.conftest import model, openai_provider, settings_from


def cluster(tmp_path: Path, table: dict[str, object],
            env: dict[str, str] | None = None) -> ClusterSettings:
    config = {"providers": [openai_provider("p", "http://127.0.0.1:9/v1")],
              "models": [model("m", "p")], "cluster": table}
    return settings_from(config, tmp_path, env).cluster


def test_without_a_cluster_table_the_replica_stands_alone(tmp_path: Path) -> None:
    settings = cluster(tmp_path, {})
    assert settings.redis_url is None
    assert settings.fail_open


def test_the_url_and_the_mode_are_read_from_the_table(tmp_path: Path) -> None:
    settings = cluster(tmp_path, {"redis_url": "redis://127.0.0.1:6379/2",
                                  "redis_mode": "fail_closed", "lease_s": 5})
    assert (settings.redis_url, settings.fail_open, settings.lease_s) == (
        "redis://127.0.0.1:6379/2", False, 5.0)


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    settings = cluster(tmp_path, {"redis_url": "redis://a:6379"},
                       {"GATEWAY_REDIS_URL": "redis://:secret-password@b:6379/0"})
    assert settings.redis_url == "redis://:secret-password@b:6379/0"
    assert "secret-password" not in repr(settings)
    assert "secret-password" not in settings.redis_shown


def test_a_password_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.redis_url: secrets do not go in the file"):
        cluster(tmp_path, {"redis_url": "redis://user:hunter2@host:6379"})


@pytest.mark.parametrize(("table", "message"), [
    ({"redis_url": "http://host"}, "cluster.redis_url"),
    ({"redis_mode": "maybe"}, "cluster.redis_mode"),
    ({"redis_timeout_ms": 0}, "cluster.redis_timeout_ms"),
    ({"key_prefix": "a{b}"}, "cluster.key_prefix"),
    ({"lease": 3}, "cluster.lease: unknown key"),
])
def test_bad_values_fail_naming_the_key(tmp_path: Path, table: dict[str, object],
                                        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cluster(tmp_path, table)


def test_redaction_keeps_everything_but_the_password() -> None:
    assert redact_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


# The shared database's keys --------------------------------------------------------------


def test_without_a_database_url_everything_stays_embedded(tmp_path: Path) -> None:
    assert not cluster(tmp_path, {}).shared_database


def test_the_database_url_comes_from_the_environment_and_stays_out_of_repr(
    tmp_path: Path,
) -> None:
    url = "postgresql://gw:s3cret-pw@db:5432/gateway"
    got = cluster(tmp_path, {"database_pool_size": 4}, {"GATEWAY_DATABASE_URL": url})
    assert got.database_url == url and got.database_pool_size == 4
    assert "s3cret" not in repr(got)


def test_a_database_url_without_password_may_sit_in_the_file(tmp_path: Path) -> None:
    assert cluster(tmp_path, {"database_url": "postgresql://gw@db/gateway"}).shared_database


@pytest.mark.parametrize(("table", "message"), [
    ({"database_url": "mysql://db/x"}, "cluster.database_url .*: expected a URL like postgresql"),
    ({"database_url": "postgresql://db"}, "expected a URL"),
    ({"database_url": "postgresql://u:pw@db/x"}, "secrets do not go in the file"),
    ({"database_pool_size": 0}, "cluster.database_pool_size"),
    ({"database_timeout_s": -1}, "cluster.database_timeout_s"),
    ({"databse_url": "x"}, "cluster.databse_url: unknown key"),
])
def test_bad_database_values_name_their_key_and_never_echo_a_password(
    tmp_path: Path, table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        cluster(tmp_path, table)
    assert "pw@" not in str(error.value)


def test_the_log_redaction_knows_the_database_and_redis_passwords(tmp_path: Path) -> None:
    env = {"GATEWAY_DATABASE_URL": "postgresql://gw:pg-pass-123@db/gateway",
           "GATEWAY_REDIS_URL": "redis://:redis-pass-456@cache:6379/0"}
    settings = settings_from({"providers": [openai_provider("p", "http://127.0.0.1:9/v1")],
                              "models": [model("m", "p")]}, tmp_path, env)
    secrets = _secrets(settings)
    assert {"pg-pass-123", "redis-pass-456", env["GATEWAY_DATABASE_URL"]} <= set(secrets)
