"""Random damage, from clients and from providers, never becomes an internal error.

Requests: each body is a valid request of its endpoint with a few changes at random places (a
value swapped for another JSON type, a field dropped, an unknown field added), answered by fake
OpenAI, Anthropic and Gemini providers with the cache on; headers, paths, query strings and the
dashboard cookie get odd values too. Only a 2xx or a 4xx in the endpoint's dialect may come
back (Anthropic's error shape on ``/v1/messages``, OpenAI's everywhere else). Upstream
answers: valid answers and stream events damaged the same way, or their bytes garbled; only a
200 or an upstream error may come back, every usage row is written, and no error is logged.

Seeded, so a failure names what caused it and comes back on every run (``FUZZ_SEED`` and
``FUZZ_ROUNDS`` in the environment search further).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.tenants.context import LEDGER_KEY
from tests import fake_anthropic as fa
from tests import fake_gemini as fg
from tests.conftest import GatewayFactory, model, openai_provider
from tests.fake_anthropic import FakeAnthropic, fake_anthropic_app
from tests.fake_gemini import FakeGemini, fake_gemini_app
from tests.fake_openai import FakeOpenAI
from tests.fuzzing import (
    CHAT,
    CHUNKS,
    COMPLETION,
    EMBEDDINGS,
    MESSAGES,
    NEVER_OPEN,
    RESPONSES,
    ROUNDS,
    damaged,
    damaged_answer,
    fuzz_rng,
    garbled,
    no_errors_logged,
)
from tests.tenant_fixtures import ADMIN_KEY, GATEWAY_ENV, bearer
from tests.test_serve import serving

MODELS = ["small", "claude", "gem"]  # one per provider kind: OpenAI, Anthropic, Gemini


@pytest.fixture
async def gateway(fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory,
                  aiohttp_server: Any) -> TestClient:
    _, url = fake_openai
    anthropic = await aiohttp_server(fake_anthropic_app(FakeAnthropic()))
    gemini = await aiohttp_server(fake_gemini_app(FakeGemini()))
    return await make_gateway({
        "providers": [
            openai_provider("p1", url),
            {"name": "a1", "kind": "anthropic", "base_url": str(anthropic.make_url("/v1")),
             "api_key_env": "FAKE_ANTHROPIC_KEY"},
            {"name": "g1", "kind": "gemini", "base_url": str(gemini.make_url("/v1beta")),
             "api_key_env": "FAKE_GEMINI_KEY"},
        ],
        "models": [model("small", "p1", upstream_model="up-small"),
                   model("claude", "a1", upstream_model="claude-fake"),
                   model("gem", "g1", upstream_model="gemini-fake")],
        "cache": {"enabled": True},
    }, env={"FAKE_ANTHROPIC_KEY": "test-anthropic-key", "FAKE_GEMINI_KEY": "test-gemini-key"})


async def _check(client: TestClient, path: str, body: dict[str, Any]) -> int:
    response = await client.post(path, data=json.dumps(body),
                                 headers={"Content-Type": "application/json"})
    raw = await response.read()  # a stream is read to its end
    shown = json.dumps(body)[:400]
    assert response.status < 500, f"{path} {response.status} for {shown}: {raw[:300]!r}"
    if response.status >= 400:
        error = json.loads(raw)
        if path.startswith("/v1/messages"):  # Anthropic's shape there, OpenAI's elsewhere
            assert error["type"] == "error" and set(error) == {"type", "error"}, shown
        error = error["error"]
        assert error["message"] and error["type"], shown
    return response.status


def _both_kinds(statuses: list[int]) -> None:
    """Some damaged bodies were still valid and went the whole way; others were refused."""
    assert any(s < 300 for s in statuses) and any(s >= 400 for s in statuses), statuses


@pytest.mark.parametrize("stream", [False, True])
async def test_damaged_chat_requests_get_no_5xx(
    gateway: TestClient, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    rng = fuzz_rng(11 if stream else 7)
    statuses = []
    for i in range(ROUNDS):
        body = {**CHAT, "model": MODELS[i % len(MODELS)], "stream": stream}
        statuses.append(await _check(gateway, "/v1/chat/completions", damaged(body, rng)))
    _both_kinds(statuses)
    no_errors_logged(caplog)  # a stream's 200 is sent first: a failure after it is only logged


@pytest.mark.parametrize("stream", [False, True])
async def test_damaged_messages_and_responses_requests_get_no_5xx_in_their_error_shape(
    gateway: TestClient, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    rng = fuzz_rng(19 if stream else 23)
    statuses: dict[str, list[int]] = {"/v1/messages": [], "/v1/responses": []}
    for i in range(ROUNDS):
        for path, body in (("/v1/messages", MESSAGES), ("/v1/responses", RESPONSES)):
            sent = damaged({**body, "model": MODELS[i % len(MODELS)], "stream": stream}, rng)
            statuses[path].append(await _check(gateway, path, sent))
        await _check(gateway, "/v1/messages/count_tokens", damaged(MESSAGES, rng))
    for seen in statuses.values():
        _both_kinds(seen)
    no_errors_logged(caplog)


async def test_damaged_route_and_embeddings_requests_get_no_5xx(gateway: TestClient) -> None:
    rng = fuzz_rng(3)
    routes = []
    for _ in range(ROUNDS):
        routes.append(await _check(gateway, "/v1/route", damaged(CHAT, rng)))
        await _check(gateway, "/v1/embeddings", damaged(EMBEDDINGS, rng))  # none served here
    _both_kinds(routes)


LIMITS: dict[str, Any] = {"requests_per_minute": 60, "tokens_per_minute": 10_000,
                          "max_concurrent": 4, "daily_budget_usd": 5.0,
                          "monthly_budget_usd": 50.0}
ODD_QUERY = ["", "0", "-1", "99999999999999999999", "abc", "2026-13-45", "%00", "é", "1e9"]


async def test_damaged_admin_requests_get_no_5xx(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    _, url = fake_openai
    client = await make_gateway({"providers": [openai_provider("p1", url)],
                                 "models": [model("small", "p1")]}, env=GATEWAY_ENV)
    admin = bearer(ADMIN_KEY)
    made = await client.post("/admin/tenants", json={"name": "acme"}, headers=admin)
    assert made.status == 201
    rng = fuzz_rng(5)
    bodies = [("POST", "/admin/tenants", {"name": "t", "limits": LIMITS}),
              ("PATCH", "/admin/tenants/acme", {"limits": LIMITS, "disabled": False}),
              ("POST", "/admin/tenants/acme/keys", {"name": "k", "limits": LIMITS})]
    statuses = []
    for i in range(ROUNDS):
        method, path, body = bodies[i % len(bodies)]
        sent = damaged(body, rng)
        if method == "POST" and path == "/admin/tenants" and isinstance(sent.get("name"), str):
            sent["name"] = f"{sent['name']}-{i}"  # a new tenant each time, or a 409
        response = await client.request(method, path, data=json.dumps(sent), headers=admin)
        raw = await response.read()
        assert response.status < 500, f"{method} {path} {response.status}: {sent}: {raw[:300]!r}"
        statuses.append(response.status)
        for query in (f"/admin/keys?tenant={rng.choice(ODD_QUERY)}&active={rng.choice(ODD_QUERY)}",
                      f"/admin/tenants/acme/usage?limit={rng.choice(ODD_QUERY)}"
                      f"&since_day={rng.choice(ODD_QUERY)}",
                      f"/admin/usage?since_day={rng.choice(ODD_QUERY)}"):
            response = await client.get(query, headers=admin)
            assert response.status < 500, f"GET {query} {response.status}"
    _both_kinds(statuses)


ODD_HEADERS: dict[str, list[str]] = {
    "Authorization": ["", "Bearer", "Bearer ", "Basic abc", "Bearer " + "a" * 5000,
                      "bearer gw-x", "Bearer gw-" + "z" * 40, "Token a b c"],
    "Cache-Control": ["", "no-cache", "no-store", "no-cache, no-store", "max-age=abc",
                      'no-cache="x"', ",,,", "NO-CACHE", "private; x=" + "y" * 3000],
    "x-request-id": ["", "a" * 5000, "id with spaces", "é", "a\tb"],
    "Cookie": ["gw_dashboard=²1.x.y", "gw_dashboard=1.2.3", "gw_dashboard=",
               "gw_dashboard=" + "a" * 4000, "gw_dashboard=9" * 400 + ".a.b"],
}


@pytest.mark.parametrize("keys", [False, True], ids=["anonymous", "keys"])
async def test_odd_request_headers_get_no_5xx(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory, keys: bool
) -> None:
    _, url = fake_openai
    client = await make_gateway({
        "providers": [openai_provider("p1", url)], "models": [model("small", "p1")],
        "cache": {"enabled": True},
        "tenants": {"require_keys": keys, "bootstrap": False},
    }, env=GATEWAY_ENV)
    rng = fuzz_rng(13)
    statuses = []
    for _ in range(ROUNDS):
        headers = {name: rng.choice(values) for name, values in ODD_HEADERS.items()
                   if rng.random() < 0.7}
        for path, method in (("/v1/chat/completions", "POST"), ("/v1/models", "GET"),
                             ("/admin/tenants", "GET"), ("/metrics", "GET"),
                             ("/dashboard", "GET")):
            response = await client.request(method, path, headers=headers, json=CHAT)
            raw = await response.read()
            assert response.status < 500, f"{method} {path} {headers}: {raw[:300]!r}"
            statuses.append(response.status)
    assert any(s < 300 for s in statuses) and any(s >= 400 for s in statuses)


ODD_PARTS = ["", "x", "0", "-1", "99999999999999999999", "%00", "%FF", "é", "..", "a%2Fb",
             "<script>", "1e9", "null", "a" * 300, "²", "١٢٣", "2026-1²-01"]


async def test_odd_paths_and_query_strings_get_no_5xx(
    fake_openai: tuple[FakeOpenAI, str], make_gateway: GatewayFactory
) -> None:
    """Every page and GET or DELETE endpoint, as the admin (the dashboard logged in too), with
    odd path parts and query values."""
    _, url = fake_openai
    client = await make_gateway({"providers": [openai_provider("p1", url)],
                                 "models": [model("small", "p1")], "cache": {"enabled": True}},
                                env=GATEWAY_ENV)
    admin = bearer(ADMIN_KEY)
    login = await client.post("/dashboard/login", data={"key": ADMIN_KEY},
                              allow_redirects=False)
    assert login.status == 303
    rng = fuzz_rng(17)
    templates = [
        ("GET", "/v1/models/{}"), ("GET", "/admin/tenants/{}"), ("GET", "/admin/tenants/{}/keys"),
        ("GET", "/admin/tenants/{}/usage?limit={}&since_day={}"), ("DELETE", "/admin/keys/{}"),
        ("DELETE", "/admin/cache/entries/{}"), ("DELETE", "/admin/cache/namespaces/{}"),
        ("GET", "/dashboard?window={}"), ("GET", "/dashboard/tenants?tenant={}&window={}"),
        ("GET", "/dashboard/requests?tenant={}&model={}&status={}&page={}&before={}"),
        ("GET", "/dashboard/providers?window={}"), ("GET", "/dashboard/login?next={}"),
        ("GET", "/metrics?name[]={}"), ("GET", "/readyz?{}"),
        ("GET", "/v1/responses/{}"), ("DELETE", "/v1/responses/{}"),
    ]
    statuses = []
    for _ in range(ROUNDS // 5):
        for method, template in templates:
            path = template.format(*(rng.choice(ODD_PARTS)
                                     for _ in range(template.count("{}"))))
            response = await client.request(method, path, headers=admin, allow_redirects=False)
            raw = await response.read()
            assert response.status < 500, f"{method} {path}: {raw[:300]!r}"
            statuses.append(response.status)
    assert any(s < 300 for s in statuses) and any(s >= 400 for s in statuses)




async def _ask_through(client: TestClient, model_name: str, caplog: pytest.LogCaptureFixture, *,
                       stream: Callable[[int], bool],
                       before: Callable[[int], None] | None = None) -> None:
    """``ROUNDS`` chat requests to an upstream that damages its answers (``before`` each one
    may script it): each gets a 200 or an upstream error (503: the breaker rests it), every
    request's usage row is written whatever the upstream reported, and no error is logged."""
    statuses = []
    for i in range(ROUNDS):
        if before is not None:
            before(i)
        body = {"model": model_name, "messages": [{"role": "user", "content": f"2 + 2? {i}"}],
                "stream": stream(i)}
        response = await client.post("/v1/chat/completions", json=body)
        raw = await response.read()
        assert response.status in (200, 502, 503), raw[:300]
        statuses.append(response.status)
    ledger = client.app[LEDGER_KEY]
    await ledger.flush()
    assert ledger.pending == 0 and ledger.written == ROUNDS
    no_errors_logged(caplog)
    assert 200 in statuses and 502 in statuses


async def _gateway_before(aiohttp_server: Any, make_gateway: GatewayFactory,
                          completions: Callable[[web.Request], Awaitable[web.StreamResponse]],
                          **config: Any) -> TestClient:
    """A gateway whose model ``small`` is served by ``completions``, an OpenAI-style upstream."""
    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", completions)
    server = await aiohttp_server(upstream)
    client: TestClient = await make_gateway({
        "providers": [openai_provider("p1", str(server.make_url("/v1")))],
        "models": [model("small", "p1", upstream_model="up-small")], **config,
    })
    return client


async def test_damaged_upstream_answers_never_become_internal_errors(
    aiohttp_server: Any, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An OpenAI-compatible upstream whose answers and stream chunks are damaged at random: the
    gateway answers 200 or an upstream error, logs no error, and the ledger takes every row."""
    rng = fuzz_rng(19)

    async def completions(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.json_response(damaged(COMPLETION, rng))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in CHUNKS:
            sent = damaged(chunk, rng) if rng.random() < 0.4 else chunk
            await response.write(b"data: " + json.dumps(sent).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    client = await _gateway_before(aiohttp_server, make_gateway, completions,
                                   failover=NEVER_OPEN)
    await _ask_through(client, "small", caplog, stream=lambda i: i % 2 == 1)


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
async def test_damaged_translated_answers_never_become_internal_errors(
    aiohttp_server: Any, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    """The same for the adapters that translate: Anthropic's messages and Gemini's
    generateContent answers and stream events, damaged at random."""
    rng = fuzz_rng(23 if kind == "gemini" else 29)
    if kind == "anthropic":
        fake: Any = FakeAnthropic()
        server = await aiohttp_server(fake_anthropic_app(fake))
        valid = [fa.text("Four is the answer."),
                 fa.tool_use([("add", {"a": 1})], lead_text="Sure.")]
        provider = {"name": "a1", "kind": "anthropic", "base_url": str(server.make_url("/v1")),
                    "api_key_env": "FAKE_KEY"}
        env = {"FAKE_KEY": "test-anthropic-key"}
    else:
        fake = FakeGemini()
        server = await aiohttp_server(fake_gemini_app(fake))
        valid = [fg.text("Four is the answer."),
                 fg.function_calls([("add", {"a": 1})], lead_text="Sure.")]
        provider = {"name": "g1", "kind": "gemini", "base_url": str(server.make_url("/v1beta")),
                    "api_key_env": "FAKE_KEY"}
        env = {"FAKE_KEY": "test-gemini-key"}
    client = await make_gateway({"providers": [provider], "failover": NEVER_OPEN,
                                 "models": [model("m", provider["name"], upstream_model="up")]},
                                env=env)
    await _ask_through(client, "m", caplog, stream=lambda i: i % 4 >= 2, before=lambda i: (
        fake.script.append(damaged_answer(valid[i % len(valid)], rng))))


async def test_garbled_upstream_bytes_never_become_internal_errors(
    aiohttp_server: Any, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream's bytes themselves damaged (the JSON answer, the event stream's framing):
    200 or an upstream error, every usage row written, nothing logged as an error."""
    rng = fuzz_rng(31)
    stream_bytes = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in CHUNKS)

    async def completions(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.Response(body=garbled(json.dumps(COMPLETION).encode(), rng),
                                content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(garbled(stream_bytes + b"data: [DONE]\n\n", rng))
        return response

    client = await _gateway_before(aiohttp_server, make_gateway, completions,
                                   failover=NEVER_OPEN)
    await _ask_through(client, "small", caplog, stream=lambda i: i % 2 == 1)


def _damaged_head(rng: random.Random, key: str) -> bytes:
    """A chat request's head with one fault: a header far too long (the key's, or another),
    too many headers, bytes that are not HTTP, a broken request line, or a head cut short."""
    head = [b"POST /v1/chat/completions HTTP/1.1", b"Host: gateway",
            b"Authorization: " + key.encode(), b"Content-Type: application/json",
            b"Content-Length: 2"]
    fault = rng.randrange(5)
    if fault == 0:
        at = rng.randrange(1, len(head))
        head[at] += b"k" * rng.randint(8_200, 40_000)
    elif fault == 1:
        head += [b"X-N%d: 1" % i for i in range(rng.randint(129, 400))]
    elif fault == 2:
        head.insert(rng.randrange(1, len(head)), bytes(rng.randrange(256) for _ in range(40)))
    elif fault == 3:
        head[0] = rng.choice([b"POST", b"POST /v1 HTTP/9.9", b"\x16\x03\x01 TLS", b"GET  HTTP"])
    else:
        return b"\r\n".join(head)[:rng.randrange(10, 60)]  # cut: the head's timer answers
    return b"\r\n".join(head) + b"\r\n\r\n{}"


async def test_damaged_request_heads_get_openai_error_json_or_a_close(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    """Raw heads damaged at random against ``gateway serve``: every answer the gateway gives is
    OpenAI's error JSON (never aiohttp's plain text), and it goes on serving."""
    rng = fuzz_rng(37)
    limits = "header_timeout_s = 0.5"
    async with serving(tmp_path, fake_openai, extra=limits) as (proc, base, _, session):
        host, port = base.removeprefix("http://").split(":")
        statuses = []
        for _ in range(40):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(_damaged_head(rng, session.headers["Authorization"]))
            raw = await asyncio.wait_for(reader.read(), timeout=30)
            writer.close()
            if not raw:
                continue  # closed without an answer: allowed
            head, _, body = raw.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            assert 400 <= status < 500 and b"application/json" in head, raw[:300]
            assert "error" in json.loads(body)
            statuses.append(status)
        async with session.post(f"{base}/v1/chat/completions", json={
                "model": "small", "messages": [{"role": "user", "content": "hi"}]}) as resp:
            assert resp.status == 200
        assert proc.returncode is None
    assert {400, 408, 431} <= set(statuses)
