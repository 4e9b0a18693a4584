"""Tests for gateway/core/cluster_settings.py: the [cluster] table's database keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.core.cluster_settings import ClusterSettings
from tests.conftest import model, openai_provider, settings_from

BASE = {"providers": [openai_provider("p1", "http://127.0.0.1:9/v1")],
        "models": [model("small", "p1")]}


def cluster(tmp_path: Path, table: dict[str, object], env: dict[str, str] | None = None
            ) -> ClusterSettings:
    return settings_from({**BASE, "cluster": table}, tmp_path, env).cluster


def test_no_cluster_table_keeps_everything_embedded(tmp_path: Path) -> None:
    settings = settings_from(BASE, tmp_path)
    assert not settings.cluster.shared_database


def test_the_url_comes_from_the_environment_and_stays_out_of_repr(tmp_path: Path) -> None:
    url = "postgresql://gw:s3cret-pw@db:5432/gateway"
    got = cluster(tmp_path, {"database_pool_size": 4}, {"GATEWAY_DATABASE_URL": url})
    assert got.database_url == url and got.database_pool_size == 4
    assert "s3cret" not in repr(got)


def test_a_url_without_password_may_sit_in_the_file(tmp_path: Path) -> None:
    got = cluster(tmp_path, {"database_url": "postgresql://gw@db/gateway"})
    assert got.shared_database


@pytest.mark.parametrize(("table", "message"), [
    ({"database_url": "mysql://db/x"}, "cluster.database_url: expected a URL like postgresql"),
    ({"database_url": "postgresql://db"}, "expected a URL"),
    ({"database_url": "postgresql://u:pw@db/x"}, "secrets do not go in the file"),
    ({"database_pool_size": 0}, "cluster.database_pool_size"),
    ({"database_timeout_s": -1}, "cluster.database_timeout_s"),
    ({"databse_url": "x"}, "cluster.databse_url: unknown key"),
])
def test_bad_values_name_their_key_and_never_echo_a_password(
    tmp_path: Path, table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        cluster(tmp_path, table)
    assert "pw@" not in str(error.value)
