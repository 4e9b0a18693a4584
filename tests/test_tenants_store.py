"""Tests for gateway/tenants/store.py (and the [tenants] settings it is opened with)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, Table
from gateway.core.errors import InvalidRequest, NotFound
from gateway.core.tenant_settings import Limits, parse_tenants
from gateway.tenants.store import (
    SCHEMA_VERSION,
    Store,
    apply_limit_changes,
    check_limit_changes,
)
from tests.tenant_fixtures import SECRET, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path) as s:
        yield s


async def test_open_applies_migrations_in_wal_mode_and_reopens(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        assert await store._scalar("PRAGMA user_version") == SCHEMA_VERSION
        assert await store._scalar("PRAGMA journal_mode") == "wal"
        await store.create_tenant("acme")
    async with open_store(tmp_path) as store:
        assert await store._scalar("PRAGMA user_version") == SCHEMA_VERSION
        assert [t.name for t in await store.list_tenants()] == ["acme"]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        await Store.open(tmp_path / "data" / "gateway.sqlite3")


async def test_tenants_are_created_listed_updated_and_deleted(store: Store) -> None:
    created = await store.create_tenant("acme", Limits(requests_per_minute=10))
    await store.create_tenant("beta")
    assert [t.name for t in await store.list_tenants()] == ["acme", "beta"]
    assert (await store.get_tenant("acme")).limits == created.limits
    updated = await store.update_tenant(
        "acme", limits={"requests_per_minute": None, "daily_budget_usd": 2.5}, disabled=True
    )
    assert updated.limits == Limits(daily_budget_usd=2.5)
    assert updated.disabled
    await store.delete_tenant("beta")
    assert await store.count_tenants() == 1
    with pytest.raises(NotFound):
        await store.get_tenant("beta")


@pytest.mark.parametrize("name", ["", "Acme", "a b", "-x", "x" * 64, "ü"])
async def test_a_bad_tenant_name_is_refused_naming_the_field(store: Store, name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.create_tenant(name)
    assert caught.value.param == "name"


async def test_a_duplicate_tenant_is_refused(store: Store) -> None:
    await store.create_tenant("acme")
    with pytest.raises(InvalidRequest, match="already exists"):
        await store.create_tenant("acme")


async def test_changing_an_unknown_tenant_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update_tenant("ghost", disabled=True)
    with pytest.raises(NotFound):
        await store.delete_tenant("ghost")
    with pytest.raises(NotFound):
        await store.create_key(SECRET, "ghost")


@pytest.mark.parametrize(
    ("values", "param"),
    [
        ({"requests_per_minute": 0}, "limits.requests_per_minute"),
        ({"tokens_per_minute": 1.5}, "limits.tokens_per_minute"),
        ({"max_concurrent": True}, "limits.max_concurrent"),
        ({"daily_budget_usd": -1}, "limits.daily_budget_usd"),
        ({"monthly_budget_usd": "10"}, "limits.monthly_budget_usd"),
        ({"rpm": 5}, "limits.rpm"),
    ],
)
def test_bad_limit_values_are_refused_naming_the_limit(
    values: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_limit_changes(values)
    assert caught.value.param == param


def test_limit_changes_apply_over_a_base() -> None:
    changes = check_limit_changes({"daily_budget_usd": 3, "requests_per_minute": None})
    base = Limits(requests_per_minute=5, tokens_per_minute=7)
    assert apply_limit_changes(base, changes) == Limits(tokens_per_minute=7, daily_budget_usd=3.0)


async def test_keys_are_created_listed_and_revoked(store: Store) -> None:
    await store.create_tenant("acme")
    record, key = await store.create_key(SECRET, "acme", name="ci")
    assert key.startswith(record.prefix)
    assert [k.id for k in await store.list_keys("acme")] == [record.id]
    revoked = await store.revoke_key(record.id)
    assert not revoked.active
    assert await store.list_keys("acme", active_only=True) == []
    assert (await store.revoke_key(record.id)).revoked_at == revoked.revoked_at


async def test_deleting_a_tenant_deletes_its_keys(store: Store) -> None:
    await store.create_tenant("acme")
    record, _ = await store.create_key(SECRET, "acme")
    await store.delete_tenant("acme")
    with pytest.raises(NotFound):
        await store.get_key(record.id)


async def test_every_change_moves_the_revision(store: Store) -> None:
    seen = [await store.revision()]
    await store.create_tenant("acme")
    seen.append(await store.revision())
    record, _ = await store.create_key(SECRET, "acme")
    seen.append(await store.revision())
    await store.update_tenant("acme", disabled=True)
    seen.append(await store.revision())
    await store.revoke_key(record.id)
    seen.append(await store.revision())
    assert seen == sorted(set(seen))


async def test_data_version_moves_only_for_other_connections(tmp_path: Path) -> None:
    async with open_store(tmp_path) as mine, open_store(tmp_path) as other:
        before = await mine.data_version()
        await mine.create_tenant("acme")
        assert await mine.data_version() == before
        await other.create_tenant("beta")
        assert await mine.data_version() != before


async def test_a_failed_transaction_is_rolled_back(store: Store) -> None:
    with pytest.raises(ZeroDivisionError):
        async with store.transaction() as db:
            await db.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
            raise ZeroDivisionError
    assert await store.get_meta("x") is None


# Settings ---------------------------------------------------------------------------------


def test_settings_read_secrets_from_the_named_environment_variables(tmp_path: Path) -> None:
    table = Table({"admin_key_env": "MY_ADMIN", "default_limits": {"requests_per_minute": 5}},
                  "tenants")
    env = {"MY_ADMIN": "a" * 20, "GATEWAY_KEY_SECRET": "s" * 32}
    settings = parse_tenants(table, env, tmp_path)
    assert settings.admin_key == "a" * 20
    assert settings.key_secret == "s" * 32
    assert settings.default_limits == Limits(requests_per_minute=5)
    assert settings.tokenizer is None  # prompt tokens are estimated unless one is configured
    assert settings.database_path(tmp_path / "data") == tmp_path / "data" / "gateway.sqlite3"
    assert "a" * 20 not in repr(settings)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"colour": "red"}, "tenants.colour: unknown key"),
        ({"budget_soft_share": 1.5}, "tenants.budget_soft_share"),
        ({"budget_soft_action": "panic"}, "tenants.budget_soft_action"),
        ({"default_limits": {"requests_per_minute": 0}}, "tenants.default_limits.requests_per"),
        ({"default_limits": {"rpm": 1}}, "tenants.default_limits.rpm: unknown key"),
        ({"ledger": {"batch_rows": 10, "max_pending_rows": 5}}, "tenants.ledger.max_pending"),
    ],
)
def test_bad_settings_fail_naming_the_key(tmp_path: Path, data: dict[str, object],
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_tenants(Table(data, "tenants"), {}, tmp_path)


def test_a_short_secret_in_the_environment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_KEY must hold at least 16"):
        parse_tenants(Table({}, "tenants"), {"GATEWAY_ADMIN_KEY": "short"}, tmp_path)
