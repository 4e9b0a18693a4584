"""Tests for gateway/upstream/http_client.py over TLS: providers are reached over HTTPS.

The provider here is a small aiohttp app serving HTTPS with a certificate from a throwaway
certificate authority (trustme); the gateway trusts it the way an operator trusts a private CA,
through ``SSL_CERT_FILE``. The pushed stream relay reads from the TLS transport's callbacks, so
its backpressure (pausing the upstream read while the client reads nothing) is checked here on
a TLS connection too, not only on plain TCP.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.upstream.appkeys import CLIENT_SESSION
from tests.conftest import GatewayFactory
from tests.test_streaming import (
    BODY,
    FILLER,
    FLOOD,
    flood,
    gateway_on,
    read_once_the_upstream_pauses,
    silent_client,
)


@pytest.fixture
def authority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> trustme.CA:
    """A certificate authority the gateway's default TLS context trusts (and nothing else)."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return ca


async def https_gateway(
    aiohttp_server: Any, make_gateway: GatewayFactory, ca: trustme.CA, handler: Any
) -> TestClient:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    return await gateway_on(aiohttp_server, make_gateway, handler, ssl=server_tls)


async def test_an_answer_comes_back_over_tls_from_a_provider_the_gateway_trusts(
    aiohttp_server: Any, make_gateway: GatewayFactory, authority: trustme.CA
) -> None:
    async def provider(request: web.Request) -> web.Response:
        assert (await request.json())["model"] == "up"
        return web.json_response({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "up",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "over TLS"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    client = await https_gateway(aiohttp_server, make_gateway, authority, provider)
    resp = await client.post("/v1/chat/completions", json={**BODY, "stream": False})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["choices"][0]["message"]["content"] == "over TLS"


async def test_a_provider_whose_certificate_is_not_trusted_is_a_clean_502(
    aiohttp_server: Any, make_gateway: GatewayFactory, authority: trustme.CA
) -> None:
    async def provider(request: web.Request) -> web.Response:
        raise AssertionError("no request reaches a provider the gateway does not trust")

    stranger = trustme.CA()  # the provider's certificate comes from a CA nobody trusts
    client = await https_gateway(aiohttp_server, make_gateway, stranger, provider)
    resp = await client.post("/v1/chat/completions", json={**BODY, "stream": False})
    assert resp.status == 502, await resp.text()
    assert (await resp.json())["error"]["type"]


async def test_a_stream_over_tls_pauses_the_upstream_while_the_client_reads_nothing(
    aiohttp_server: Any, make_gateway: GatewayFactory, authority: trustme.CA
) -> None:
    client = await https_gateway(aiohttp_server, make_gateway, authority, flood)
    assert client.server.port is not None
    reader, writer = await silent_client(client.server.port, close=True)
    answer = await read_once_the_upstream_pauses(client.server.app[CLIENT_SESSION], reader, writer)
    assert answer.count(FILLER.encode()) == FLOOD
    assert answer.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
