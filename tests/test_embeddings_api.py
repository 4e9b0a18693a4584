"""``POST /v1/embeddings`` (gateway/api/embeddings.py) end to end: the handler behind the
gateway's error middleware, its supervised worker, the real model.

The app is the whole gateway (``create_app``), keyless, with the real model.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from embedder_worker.supervisor import EMBEDDER_POOL
from gateway.app import create_app
from gateway.core.config import parse
from gateway.observability.access_log import ACCESS_LOGGER
from gateway.observability.dashboard.refusals import latest_refusals
from gateway.tenants.context import LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import recent
from tests.conftest import ROOT
from tests.fuzzing import damaged, fuzz_rng

if TYPE_CHECKING:
    from tests.embedder_fixtures import Reference

pytest_plugins = ["tests.embedder_fixtures"]
pytestmark = pytest.mark.timeout(40)

MODEL = "all-MiniLM-L6-v2"
Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]


def embeddings_app(model_dir: Path, tmp_path: Path) -> web.Application:
    """The whole gateway, keyless, with one supervised worker serving ``model_dir``."""
    settings = parse(
        {
            "server": {"data_dir": str(tmp_path / "data")},
            "providers": [{"name": "demo", "kind": "demo"}],
            "models": [{"name": "chat", "provider": "demo", "tier": "cheap"}],
            "embedder": {"model_dir": str(model_dir)},
            "tenants": {"require_keys": False, "bootstrap": False, "tokenizer": ""},
        },
        env={},
        base_dir=tmp_path,
        source="<test>",
    )
    return create_app(settings)


@pytest.fixture
async def gateway(aiohttp_client: ClientFactory, model_dir: Path, tmp_path: Path) -> Client:
    """The embeddings endpoint with one supervised worker, once that worker is live."""
    client = await aiohttp_client(embeddings_app(model_dir, tmp_path))
    await client.app[EMBEDDER_POOL].wait_live(1)
    return client


async def embed(client: Client, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/embeddings", json={"model": MODEL, **body})
    assert resp.status == 200, await resp.text()
    payload: dict[str, Any] = await resp.json()
    return payload


async def test_a_list_of_strings_gets_reference_vectors_in_order_with_usage(
    gateway: Client, reference: Reference
) -> None:
    body = await embed(gateway, input=reference.sentences[:10])
    assert body["object"] == "list" and body["model"] == MODEL
    assert [item["index"] for item in body["data"]] == list(range(10))
    vectors = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    assert np.abs(vectors - reference.embeddings[:10]).max() <= 1e-5
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 10


async def test_one_string_as_base64_decodes_to_the_same_vector(
    gateway: Client, reference: Reference
) -> None:
    body = await embed(gateway, input=reference.sentences[0], encoding_format="base64")
    (item,) = body["data"]
    vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    assert np.abs(vector - reference.embeddings[0]).max() <= 1e-5


async def test_dimensions_equal_to_the_model_are_accepted(gateway: Client) -> None:
    body = await embed(gateway, input="hello", dimensions=384)
    assert len(body["data"][0]["embedding"]) == 384


BAD_REQUESTS: list[tuple[dict[str, Any], int, str]] = [
    ({"model": MODEL, "input": [101, 2023]}, 400, "input"),
    ({"model": MODEL, "input": [[101, 2023]]}, 400, "input"),
    ({"model": MODEL, "input": ""}, 400, "input"),
    ({"model": MODEL, "input": []}, 400, "input"),
    ({"model": MODEL, "input": "hi", "dimensions": 256}, 400, "dimensions"),
    ({"model": MODEL, "input": "hi", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"input": "hi"}, 400, "model"),
    ({"model": "text-embedding-3-small", "input": "hi"}, 404, "model"),
]


async def test_bad_requests_get_openai_errors_naming_the_field(gateway: Client) -> None:
    # One gateway (and worker) for all cases: starting a worker per case would be most of the time.
    for body, status, param in BAD_REQUESTS:
        resp = await gateway.post("/v1/embeddings", json=body)
        assert resp.status == status, body
        error = (await resp.json())["error"]
        assert error["param"] == param, body
        assert error["message"], body


async def test_token_id_input_is_refused_with_the_langchain_setting_the_readme_shows(
    gateway: Client,
) -> None:
    # What LangChain's OpenAIEmbeddings sends by default: each text as a list of token ids.
    resp = await gateway.post("/v1/embeddings", json={"model": MODEL, "input": [[9906, 1917]]})
    assert resp.status == 400
    message = (await resp.json())["error"]["message"]
    assert "check_embedding_ctx_length=False" in message
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "OpenAIEmbeddings(" in readme and "check_embedding_ctx_length=False" in readme


async def test_before_any_worker_is_ready_the_endpoint_answers_503(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await aiohttp_client(embeddings_app(tmp_path / "no-model-here", tmp_path))
    assert not client.app[EMBEDDER_POOL].ready
    resp = await client.post("/v1/embeddings", json={"model": MODEL, "input": "hi"})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "embedder_starting"


async def test_with_the_embedder_turned_off_the_model_is_not_found(
    one_upstream: tuple[Client, Any],
) -> None:
    client, _ = one_upstream  # a gateway with [embedder] enabled = false
    resp = await client.post("/v1/embeddings", json={"model": MODEL, "input": "hi"})
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert error["param"] == "model" and "enabled = false" in error["message"]


async def test_damaged_requests_to_a_live_worker_get_no_5xx(gateway: Client) -> None:
    """Random damage to a valid body, through to the real worker: a 200 with one vector per
    input, or a 4xx in OpenAI's shape; the worker keeps answering."""
    rng = fuzz_rng(37)
    valid = {"model": MODEL, "input": ["one", "zwei", "\u4e09 " * 50, "a" * 3000],
             "encoding_format": "float"}
    served = 0
    for _ in range(60):
        body = damaged(valid, rng)
        resp = await gateway.post("/v1/embeddings", data=json.dumps(body),
                                  headers={"Content-Type": "application/json"})
        payload = await resp.json()
        assert resp.status < 500, (body, payload)
        if resp.status == 200:
            served += 1
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            assert len(payload["data"]) == len(texts)
        else:
            assert payload["error"]["message"]
    assert served > 0
    assert (await embed(gateway, input="still here"))["data"]


async def test_embeddings_calls_are_in_the_ledger_and_the_access_log(
    gateway: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        resp = await gateway.post("/v1/embeddings", json={"model": MODEL,
                                                          "input": ["one", "two words"]})
        body = await resp.json()
        refused = await gateway.post("/v1/embeddings", json={"model": MODEL, "input": ""})
        assert refused.status == 400
    await gateway.app[LEDGER_KEY].flush()
    (row,) = await recent(gateway.app[STORE_KEY])
    assert row.api == "embeddings" and row.request_id == resp.headers["x-request-id"]
    assert (row.tenant, row.model, row.status) == ("anonymous", MODEL, 200)
    assert row.tokens_in == body["usage"]["prompt_tokens"] > 0 and row.cost == 0
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/v1/embeddings", 200), ("/v1/embeddings", 400)]
    assert lines[0]["tokens_in"] == row.tokens_in and lines[1]["error"] == "invalid_request_error"
    (refusal,) = await latest_refusals(gateway.app[STORE_KEY])
    assert (refusal.api, refusal.status, refusal.param) == ("/v1/embeddings", 400, "input")
