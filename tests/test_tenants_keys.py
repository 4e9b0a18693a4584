"""Tests for gateway/tenants/keys.py, redact.py and the keys/tenants CLI (cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, Settings
from gateway.core.redact import MASK, RedactingFilter, redact
from gateway.tenants.cli import add_commands
from gateway.tenants.context import open_store as open_tenants_store
from gateway.tenants.keys import (
    KEY_PREFIX,
    PREFIX_CHARS,
    generate_admin_key,
    generate_key,
    hash_key,
    is_key_shaped,
    key_prefix,
    load_or_create_secret,
)
from gateway.tenants.store import Store
from tests.tenant_fixtures import SECRET, gateway_settings, open_store


def test_generated_keys_are_unique_shaped_and_carry_a_short_public_prefix() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert is_key_shaped(key)
        assert len(key_prefix(key)) == PREFIX_CHARS == 11


def test_a_key_hash_depends_on_the_secret_and_never_contains_the_key() -> None:
    key = generate_key()
    digest = hash_key(SECRET, key)
    assert digest == hash_key(SECRET, key)
    assert digest != hash_key(b"another-secret-0123456789", key)
    assert key not in digest and len(digest) == 64


async def test_the_database_holds_only_the_hash_of_a_key(tmp_path: Path) -> None:
    async with open_store(tmp_path) as store:
        await store.create_tenant("acme")
        record, key = await store.create_key(SECRET, "acme")
        assert record.digest == hash_key(SECRET, key)
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file())
    assert key.encode() not in raw
    assert key[PREFIX_CHARS:].encode() not in raw


def test_a_missing_secret_is_generated_once_into_a_private_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        first = load_or_create_secret(None, tmp_path, "GATEWAY_KEY_SECRET")
    assert "GATEWAY_KEY_SECRET is not set" in caplog.text
    assert first.decode() not in caplog.text
    path = tmp_path / "key_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(None, tmp_path, "GATEWAY_KEY_SECRET") == first
    assert load_or_create_secret("configured-secret-123", tmp_path, "X") == b"configured-secret-123"


def test_a_truncated_secret_file_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "key_secret").write_text("short")
    with pytest.raises(ConfigError, match="too short"):
        load_or_create_secret(None, tmp_path, "GATEWAY_KEY_SECRET")


# Redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "key {key} failed",
        "Authorization: Bearer {key}",
        "authorization=Bearer sk-upstream-secret",
        "headers {{'Authorization': 'Bearer abc.def.ghi'}}",
        "x-api-key: {key}",
        "api_key=sk-live-1234567890",
    ],
)
def test_redact_masks_keys_and_bearer_tokens(text: str) -> None:
    key = generate_key()
    out = redact(text.format(key=key))
    assert key not in out
    assert "sk-" not in out and "abc.def.ghi" not in out
    assert MASK in out


def test_redact_masks_admin_keys_and_explicit_secrets_but_keeps_ordinary_text() -> None:
    admin = generate_admin_key()
    assert admin not in redact(f"admin {admin}")
    assert redact("secret hunter2hunter2 here", ["hunter2hunter2"]) == f"secret {MASK} here"
    assert redact("tenant acme used 12 tokens on gw route") == (
        "tenant acme used 12 tokens on gw route"
    )


def test_the_logging_filter_redacts_arguments_and_tracebacks() -> None:
    key = generate_key()
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    try:
        logger.warning("auth header was %s", f"Bearer {key}")
        try:
            raise ValueError(f"bad key {key}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2
    assert all(key not in r for r in records)
    assert "bad key gw-" + MASK in records[1]


# CLI --------------------------------------------------------------------------------------


def _served_store(tmp_path: Path) -> Settings:
    """Settings whose store exists, as after a gateway's first start."""
    settings = gateway_settings(tmp_path)

    async def first_start() -> None:
        store, _ = await open_tenants_store(settings.tenants, settings.server.data_dir)
        await store.close()

    asyncio.run(first_start())
    return settings


def _cli(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    add_commands(parser.add_subparsers(dest="command", required=True),
                 lambda leaf: leaf.add_argument("--config"))
    args = parser.parse_args(argv)
    status: int = args.handler(args, settings)
    return status


async def _store_state(settings: Settings) -> tuple[list[str], list[tuple[str, bool]]]:
    store = await Store.open(settings.server.data_dir / "gateway.sqlite3")
    try:
        tenants = [t.name for t in await store.list_tenants()]
        keys = [(k.id, k.active) for k in await store.list_keys()]
    finally:
        await store.close()
    return tenants, keys


def test_the_cli_manages_tenants_and_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _served_store(tmp_path)
    assert _cli(settings, "tenants", "create", "acme", "--rpm", "30", "--daily-budget", "2") == 0
    assert _cli(settings, "tenants", "update", "acme", "--rpm", "none", "--disable") == 0
    assert _cli(settings, "keys", "create", "acme", "--name", "ci", "--tpm", "1000") == 0
    out = capsys.readouterr().out
    key = next(line for line in out.splitlines() if line.startswith("gw-"))
    assert out.count(key) == 1
    assert "daily_budget_usd=2.0" in out and "(disabled)" in out

    assert _cli(settings, "keys", "list", "--json") == 0
    listing = capsys.readouterr().out
    assert key not in listing and key_prefix(key) in listing
    tenants, keys = asyncio.run(_store_state(settings))
    assert tenants == ["acme"]
    key_id = keys[0][0]

    assert _cli(settings, "keys", "revoke", key_id) == 0
    assert _cli(settings, "tenants", "list", "--config", "ignored.toml") == 0
    assert "acme" in capsys.readouterr().out
    assert asyncio.run(_store_state(settings))[1] == [(key_id, False)]


def test_cli_errors_are_reported_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _served_store(tmp_path)
    assert _cli(settings, "keys", "create", "ghost") == 1
    assert "error: No tenant named 'ghost'" in capsys.readouterr().err
    assert _cli(settings, "tenants", "create", "acme", "--rpm", "0") == 1
    assert "requests_per_minute" in capsys.readouterr().err


def test_the_cli_refuses_a_key_secret_the_stored_keys_were_not_made_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _served_store(tmp_path)
    other = replace(settings, tenants=replace(settings.tenants, key_secret="x" * 40))
    assert _cli(other, "keys", "create", "acme") == 2
    err = capsys.readouterr().err
    assert "not the one this store's keys were made with" in err and "x" * 40 not in err
