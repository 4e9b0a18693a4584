"""Tests for gateway/api/admin.py and the cleanup context of gateway/tenants/context.py."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.core.appkeys import SETTINGS
from gateway.core.errors import AuthenticationFailed
from gateway.core.tenant_settings import TenantSettings
from gateway.tenants.context import ADMISSION_KEY, AUTH_KEY, LEDGER_KEY, RELOAD_TASK_KEY
from gateway.tenants.keys import generate_key
from gateway.tenants.ledger import UsageRecord
from tests.tenant_fixtures import ADMIN_KEY, bearer, chat, tenant_settings, tenants_app

ADMIN = bearer(ADMIN_KEY)
Client = TestClient[web.Request, web.Application]


async def _client(aiohttp_client: Any, tmp_path: Path,
                  settings: TenantSettings | None = None) -> Client:
    client: Client = await aiohttp_client(tenants_app(tmp_path, settings))
    return client


async def _tenant_with_key(client: Client, name: str) -> str:
    assert (await client.post("/admin/tenants", json={"name": name}, headers=ADMIN)).status == 201
    made = await client.post(f"/admin/tenants/{name}/keys", json={"name": "k"}, headers=ADMIN)
    assert made.status == 201
    key: str = (await made.json())["key"]
    return key


async def test_tenants_are_managed_over_http(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    made = await client.post("/admin/tenants", headers=ADMIN,
                             json={"name": "acme", "limits": {"requests_per_minute": 60}})
    assert made.status == 201
    assert (await made.json())["limits"]["requests_per_minute"] == 60
    changed = await client.patch("/admin/tenants/acme", headers=ADMIN,
                                 json={"limits": {"daily_budget_usd": 5}, "disabled": True})
    body = await changed.json()
    assert body["limits"]["daily_budget_usd"] == 5.0 and body["disabled"] is True
    listing = await (await client.get("/admin/tenants", headers=ADMIN)).json()
    assert [t["name"] for t in listing["data"]] == ["acme"]
    assert (await client.get("/admin/tenants/acme", headers=ADMIN)).status == 200
    assert (await client.delete("/admin/tenants/acme", headers=ADMIN)).status == 200
    missing = await client.get("/admin/tenants/acme", headers=ADMIN)
    assert missing.status == 404
    assert (await missing.json())["error"]["type"] == "not_found_error"


async def test_a_key_is_shown_once_and_revoking_it_takes_effect_at_once(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    key = await _tenant_with_key(client, "acme")
    auth = client.app[AUTH_KEY]
    principal = auth.authenticate(f"Bearer {key}")
    assert principal.tenant == "acme"
    listing = await (await client.get("/admin/tenants/acme/keys", headers=ADMIN)).text()
    assert key not in listing and key[:11] in listing
    revoked = await client.delete(f"/admin/keys/{principal.key_id}", headers=ADMIN)
    assert (await revoked.json())["revoked_at"] is not None
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(f"Bearer {key}")
    active = await (await client.get("/admin/keys?active=true", headers=ADMIN)).json()
    assert active["data"] == []


async def test_wrong_malformed_and_missing_admin_keys_get_the_same_401(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    answers = []
    for headers in (bearer(generate_key()), bearer("nonsense"), {"Authorization": ADMIN_KEY},
                    {"Authorization": "Basic abc"}, {}):
        response = await client.get("/admin/tenants", headers=headers)
        answers.append((response.status, await response.json()))
    assert all(a == answers[0] for a in answers)
    assert answers[0][0] == 401
    assert answers[0][1]["error"]["type"] == "authentication_error"


async def test_tenant_keys_never_read_admin_data_or_another_tenants_usage(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    acme_key = await _tenant_with_key(client, "acme")
    await _tenant_with_key(client, "beta")
    client.app[LEDGER_KEY].record(UsageRecord("req_b", "beta", "key_b", "small", 200, 1e9))
    for method, path in [("GET", "/admin/tenants/beta/usage"), ("GET", "/admin/tenants/acme"),
                         ("GET", "/admin/tenants"), ("GET", "/admin/keys"),
                         ("GET", "/admin/usage"), ("POST", "/admin/tenants/acme/keys"),
                         ("DELETE", "/admin/tenants/beta")]:
        response = await client.request(method, path, headers=bearer(acme_key))
        body = await response.json()
        assert response.status == 403, path
        assert body["error"]["type"] == "permission_error"
        assert "beta" not in str(body) and "req_b" not in str(body)


async def test_usage_per_tenant_shows_only_that_tenant(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    await _tenant_with_key(client, "acme")
    await _tenant_with_key(client, "beta")
    ledger = client.app[LEDGER_KEY]
    now = time.time()
    ledger.record(UsageRecord("req_a", "acme", "key_a", "small", 200, now, cost=0.25))
    ledger.record(UsageRecord("req_b", "beta", "key_b", "big", 200, now, cost=4.0))
    body = await (await client.get("/admin/tenants/acme/usage", headers=ADMIN)).json()
    assert body["tenant"] == "acme"
    assert body["today"]["cost"] == pytest.approx(0.25)
    assert [r["request_id"] for r in body["recent"]] == ["req_a"]
    assert [m["model"] for m in body["by_model"]] == ["small"]
    everyone = await (await client.get("/admin/usage", headers=ADMIN)).json()
    assert [t["tenant"] for t in everyone["tenants"]] == ["acme", "beta"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "param"),
    [
        ("POST", "/admin/tenants", {"name": 5}, "name"),
        ("POST", "/admin/tenants", {"name": "Bad Name"}, "name"),
        ("POST", "/admin/tenants", {"name": "x", "limits": {"tokens_per_minute": -1}},
         "limits.tokens_per_minute"),
        ("POST", "/admin/tenants", {"name": "x", "colour": "red"}, "colour"),
        ("PATCH", "/admin/tenants/acme", {"disabled": "yes"}, "disabled"),
        ("POST", "/admin/tenants/acme/keys", {"limits": []}, "limits"),
        ("GET", "/admin/tenants/acme/usage?limit=abc", None, "limit"),
        ("GET", "/admin/usage?since_day=yesterday", None, "since_day"),
        ("GET", "/admin/usage?since_day=2026-13-45", None, "since_day"),
        ("GET", "/admin/tenants/acme/usage?since_day=2026-02-30", None, "since_day"),
        ("GET", "/admin/keys?active=maybe", None, "active"),
        ("POST", "/admin/tenants/acme/keys", {"name": "k" * 201}, "name"),
        ("POST", "/admin/tenants/acme/keys", {"name": "line\nbreak"}, "name"),
    ],
)
async def test_bad_admin_input_is_a_400_naming_the_field(
    aiohttp_client: Any, tmp_path: Path, method: str, path: str, payload: Any, param: str
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    await client.post("/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    response = await client.request(method, path, json=payload, headers=ADMIN)
    assert response.status == 400
    assert (await response.json())["error"]["param"] == param


async def test_limits_beyond_what_the_store_can_hold_are_a_400(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    response = await client.post("/admin/tenants", headers=ADMIN,
                                 json={"name": "acme", "limits": {"tokens_per_minute": 2**63}})
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "limits.tokens_per_minute"
    assert (await client.get("/admin/tenants/acme", headers=ADMIN)).status == 404


async def test_a_body_that_is_not_json_is_a_400(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    response = await client.post("/admin/tenants", data=b"{nope", headers=ADMIN)
    assert response.status == 400


async def test_a_body_over_the_size_limit_is_a_413_and_nothing_is_made(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    limit = client.app[SETTINGS].server.max_body_bytes
    huge = b'{"name": "acme", "padding": "' + b"a" * limit + b'"}'
    response = await client.post("/admin/tenants", data=io.BytesIO(huge), headers=ADMIN)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_too_large"
    assert (await client.get("/admin/tenants/acme", headers=ADMIN)).status == 404


async def test_first_start_prints_a_working_key_and_an_admin_key_once(
    aiohttp_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tenant_settings(admin_key=None, bootstrap=True)
    client = await _client(aiohttp_client, tmp_path, settings)
    out = capsys.readouterr().out
    lines = out.splitlines()
    admin_key = next(w for line in lines if line.startswith("Admin key") for w in line.split()
                     if w.startswith("gw-admin-"))
    key = next(w for line in lines if line.startswith("API key") for w in line.split()
               if w.startswith("gw-") and not w.startswith("gw-admin-"))
    assert "curl http://127.0.0.1:8080/v1/chat/completions" in out
    assert client.app[AUTH_KEY].authenticate(f"Bearer {key}").tenant == "default"
    response = await client.get("/admin/tenants", headers=bearer(admin_key))
    assert [t["name"] for t in (await response.json())["data"]] == ["default"]
    await client.close()

    again = await _client(aiohttp_client, tmp_path, settings)
    assert capsys.readouterr().out == ""
    assert (await again.get("/admin/tenants", headers=bearer(admin_key))).status == 200


async def test_the_context_wires_admission_and_stops_its_tasks(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    key = await _tenant_with_key(client, "acme")
    app = client.app
    principal = app[AUTH_KEY].authenticate(f"Bearer {key}")
    reservation = await app[ADMISSION_KEY].admit(principal, chat())
    await app[ADMISSION_KEY].settle(reservation, None, 0.0)
    app[LEDGER_KEY].record(UsageRecord("req_1", "acme", principal.key_id, "m", 200, 1e9))
    watcher = app[RELOAD_TASK_KEY]
    await client.close()
    assert watcher.done()
    assert app[LEDGER_KEY].written == 1
