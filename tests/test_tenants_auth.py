"""Tests for gateway/tenants/auth.py and the reload watcher of gateway/tenants/context.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import AuthenticationFailed, PermissionDenied
from gateway.core.tenant_settings import Limits
from gateway.tenants import auth as auth_module
from gateway.tenants.auth import Authenticator, bearer_token
from gateway.tenants.context import watch_changes
from gateway.tenants.keys import generate_key, hash_key
from gateway.tenants.store import Store
from tests.tenant_fixtures import ADMIN_KEY, SECRET, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path) as s:
        await s.create_tenant("acme", Limits(requests_per_minute=10))
        await s.create_tenant("beta")
        yield s


@pytest.fixture
async def auth(store: Store) -> Authenticator:
    authenticator = Authenticator(SECRET, hash_key(SECRET, ADMIN_KEY))
    await authenticator.reload(store)
    return authenticator


async def test_a_valid_key_gives_its_tenant_and_limits(store: Store, auth: Authenticator) -> None:
    record, key = await store.create_key(SECRET, "acme", limits=Limits(max_concurrent=2))
    await auth.reload(store)
    principal = auth.authenticate(f"Bearer {key}")
    assert (principal.tenant, principal.key_id, principal.key_prefix) == (
        "acme", record.id, record.prefix)
    assert principal.tenant_limits == Limits(requests_per_minute=10)
    assert principal.key_limits == Limits(max_concurrent=2)
    assert auth.authenticate(f"bearer   {key}  ") == principal


def _failure(auth: Authenticator, header: str | None) -> tuple[int, dict[str, Any]]:
    with pytest.raises(AuthenticationFailed) as caught:
        auth.authenticate(header)
    return caught.value.status, caught.value.body()


async def test_wrong_revoked_malformed_and_missing_keys_fail_identically(
    store: Store, auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    record, revoked = await store.create_key(SECRET, "acme")
    _, valid = await store.create_key(SECRET, "acme")
    await store.revoke_key(record.id)
    await auth.reload(store)
    calls: list[str] = []

    def counting_hash(secret: bytes, key: str) -> str:
        calls.append(key)
        return hash_key(secret, key)

    monkeypatch.setattr(auth_module, "hash_key", counting_hash)
    headers = [f"Bearer {generate_key()}", f"Bearer {revoked}", valid, f"Basic {valid}",
               f"Bearer {valid} extra", "Bearer", "", None]
    failures = [_failure(auth, h) for h in headers]
    assert all(f == failures[0] for f in failures)
    assert failures[0][0] == 401
    assert failures[0][1]["error"]["code"] == "invalid_api_key"
    assert len(calls) == len(headers)  # the same work (one HMAC) whatever was wrong


async def test_keys_of_a_disabled_or_deleted_tenant_stop_working(
    store: Store, auth: Authenticator
) -> None:
    _, acme_key = await store.create_key(SECRET, "acme")
    _, beta_key = await store.create_key(SECRET, "beta")
    await store.update_tenant("acme", disabled=True)
    await store.delete_tenant("beta")
    await auth.reload(store)
    for key in (acme_key, beta_key):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate(f"Bearer {key}")


async def test_the_admin_check_passes_the_admin_key_and_refuses_tenant_keys(
    store: Store, auth: Authenticator
) -> None:
    _, key = await store.create_key(SECRET, "acme")
    await auth.reload(store)
    auth.authenticate_admin(f"Bearer {ADMIN_KEY}")
    with pytest.raises(PermissionDenied):
        auth.authenticate_admin(f"Bearer {key}")
    for header in (f"Bearer {generate_key()}", ADMIN_KEY, None):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate_admin(header)
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(f"Bearer {ADMIN_KEY}")


def test_an_authenticator_without_admin_key_refuses_every_admin_call() -> None:
    auth = Authenticator(SECRET, None)
    for header in ("Bearer " + "0" * 64, "Bearer ", None):
        with pytest.raises(AuthenticationFailed):
            auth.authenticate_admin(header)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc", ("abc", True)), ("bearer abc", ("abc", True)), ("Token abc", ("abc", False)),
     ("Bearer a b", ("a b", False)), ("Bearer ", ("", False)), (None, ("", False))],
)
def test_bearer_token_parsing(header: str | None, expected: tuple[str, bool]) -> None:
    assert bearer_token(header) == expected


async def test_a_change_made_by_another_process_is_picked_up(
    tmp_path: Path, store: Store, auth: Authenticator
) -> None:
    record, key = await store.create_key(SECRET, "acme")
    await auth.reload(store)
    reloaded = asyncio.Event()
    watcher = asyncio.create_task(watch_changes(store, auth, 0.01, reloaded))
    try:
        async with open_store(tmp_path) as cli_store:  # what `gateway keys revoke` does
            await cli_store.revoke_key(record.id)
        await asyncio.wait_for(reloaded.wait(), 10)
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(f"Bearer {key}")
