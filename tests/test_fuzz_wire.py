"""Damage at the level of bytes and HTTP never becomes an internal error.

Every endpoint that takes a body gets its valid body with one value swapped for raw text that is
odd JSON or none (NaN, Infinity, a number past 64 bits, lone surrogate escapes, invalid UTF-8,
nesting hundreds of levels deep), or a body that is not an object at all; sent with a random
Content-Type and a random Content-Encoding (gzip and deflate, valid, cut short or not compressed
at all, and names the gateway does not know). Every route also gets methods it does not serve.
Only a 2xx or a 4xx in the endpoint's error shape may come back (Anthropic's on
``/v1/messages``, OpenAI's elsewhere, HTML on the dashboard's pages), nothing is logged as an
error, and the gateway goes on serving. Seeded (``FUZZ_SEED``, ``FUZZ_ROUNDS``).
"""

from __future__ import annotations

import gzip
import json
import random
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_openai import FakeOpenAI
from tests.fuzzing import (
    CHAT,
    EMBEDDINGS,
    MESSAGES,
    RESPONSES,
    ROUNDS,
    fuzz_rng,
    no_errors_logged,
    paths,
)
from tests.tenant_fixtures import ADMIN_KEY, GATEWAY_ENV

LIMITS = {"requests_per_minute": 60, "daily_budget_usd": 5.0}
BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/messages", MESSAGES),
    ("POST", "/v1/messages/count_tokens", MESSAGES),
    ("POST", "/v1/responses", RESPONSES),
    ("POST", "/v1/embeddings", EMBEDDINGS),
    ("POST", "/v1/route", CHAT),
    ("POST", "/v1/feedback", {"request_id": "req_1", "score": "good", "comment": "fine"}),
    ("POST", "/admin/tenants", {"name": "t", "limits": LIMITS}),
    ("PATCH", "/admin/tenants/acme", {"limits": LIMITS, "disabled": False}),
    ("POST", "/admin/tenants/acme/keys", {"name": "k", "limits": LIMITS}),
]
ODD_TEXT = [
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"18446744073709551616",
    b"-9223372036854775809", b"1" * 400, b'"\\ud800"', b'"\\udfff\\ud800"', b'"a\\u0000b"',
    b'"\xff\xfe"', b'"\xed\xa0\x80"', b"[" * 300 + b"]" * 300, b"[" * 2000 + b"]" * 2000,
    b'{"a":' * 200 + b"1" + b"}" * 200, b"[" * 50 + b"]" * 49, b"tru", b"0x10", b"+1", b"01",
    b"'single'", b'"tab\there"',
]
WHOLE_BODIES = [b"", b"null", b"1", b'"text"', b"[]", b"[{}]", b"true", b"\xef\xbb\xbf{}",
                b"{} {}", b"\x00", b"{" * 3000]
CONTENT_TYPES = ["application/json", "application/json; charset=latin-1", "text/plain", "",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json; charset=utf-16"]
MARK = "\x00odd\x00"


def _raw_body(body: dict[str, Any], rng: random.Random) -> bytes:
    """``body`` as JSON text with one value, at a random place, replaced by odd text; or a body
    that is not one object at all."""
    if rng.random() < 0.15:
        return rng.choice(WHOLE_BODIES)
    marked = json.loads(json.dumps(body))
    place = rng.choice([p for p in paths(marked) if p])
    parent = marked
    for step in place[:-1]:
        parent = parent[step]
    parent[place[-1]] = MARK
    return json.dumps(marked).encode().replace(json.dumps(MARK).encode(), rng.choice(ODD_TEXT))


def _encoded(raw: bytes, rng: random.Random) -> tuple[bytes, dict[str, str]]:
    """``raw`` with a Content-Encoding: none, honest, lying, cut short or unknown."""
    roll = rng.random()
    if roll < 0.5:
        return raw, {}
    if roll < 0.65:
        return gzip.compress(raw), {"Content-Encoding": "gzip"}
    if roll < 0.75:
        return zlib.compress(raw), {"Content-Encoding": "deflate"}
    if roll < 0.85:
        return raw, {"Content-Encoding": rng.choice(["gzip", "deflate"])}  # not compressed
    if roll < 0.92:
        packed = gzip.compress(raw)
        return packed[: rng.randrange(1, len(packed))], {"Content-Encoding": "gzip"}
    return raw, {"Content-Encoding": rng.choice(["br", "zstd", "compress", "gzip, br", "x"])}


def _check(method: str, path: str, status: int, ctype: str, raw: bytes, shown: str) -> None:
    assert status < 500, f"{method} {path} {status} for {shown}: {raw[:300]!r}"
    if status < 400 or method == "HEAD" or "text/html" in ctype:
        return
    error = json.loads(raw)
    if path.startswith("/v1/messages"):
        assert error["type"] == "error" and set(error) == {"type", "error"}, shown
    assert error["error"]["message"] and error["error"]["type"], shown


@pytest.fixture
async def gateway(fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory) -> TestClient:
    _, url = fake_openai
    client = await make_gateway({"providers": [openai_provider("p1", url)],
                                 "models": [model("small", "p1"), model("claude", "p1"),
                                            model("gem", "p1"), model("local", "p1")],
                                 "cache": {"enabled": True}}, env=GATEWAY_ENV)
    created = await client.post("/admin/tenants", json={"name": "acme"},
                                headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert created.status == 201
    return client


async def test_odd_bytes_types_and_encodings_in_every_body_get_no_5xx(
    gateway: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    rng = fuzz_rng(43)
    statuses = []
    for i in range(ROUNDS * 2):
        method, path, body = BODIES[i % len(BODIES)]
        raw, headers = _encoded(_raw_body(body, rng), rng)
        headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        if ctype := rng.choice(CONTENT_TYPES):
            headers["Content-Type"] = ctype
        response = await gateway.request(method, path, data=raw, headers=headers)
        answer = await response.read()
        shown = f"{headers} {raw[:200]!r}"
        _check(method, path, response.status, response.content_type, answer, shown)
        statuses.append(response.status)
    assert {400, 415} <= set(statuses) and any(s < 300 for s in statuses), statuses
    no_errors_logged(caplog)
    served = await gateway.post("/v1/chat/completions", json={
        "model": "small", "messages": [{"role": "user", "content": "still there?"}]})
    assert served.status == 200


METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


async def test_every_route_with_every_method_gets_no_5xx(
    gateway: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Each route's path (its variable parts filled in) with each method, as the admin, with
    an empty body and with a JSON object."""
    rng = fuzz_rng(47)
    templates = {r.resource.canonical for r in gateway.app.router.routes() if r.resource}
    statuses = []
    for template in sorted(templates):
        path = template.format_map({name: rng.choice(["acme", "x", "0", "%00", "é"])
                                    for name in ("tenant", "key_id", "entry_id", "namespace",
                                                 "response_id", "model", "filename")})
        for method in METHODS:
            for data in (b"", b"{}"):
                response = await gateway.request(method, path, data=data, headers={
                    "Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
                    allow_redirects=False)
                raw = await response.read()
                _check(method, path, response.status, response.content_type, raw, repr(data))
                statuses.append(response.status)
    assert 405 in statuses and any(s < 300 for s in statuses)
    no_errors_logged(caplog)
