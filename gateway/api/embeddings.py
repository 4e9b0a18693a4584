"""``POST /v1/embeddings``: sentence vectors from the local embedding workers, in OpenAI's format.

Accepts ``input`` as one string or a list of strings (token-id arrays are refused with a 400),
``model`` (the name the workers serve), ``encoding_format`` ``float`` or ``base64`` (little-endian
float32, as OpenAI sends it) and ``dimensions`` (accepted only when it equals the model's). Texts
longer than the model's ``max_length`` tokens are truncated, as sentence-transformers does, and
``usage.prompt_tokens`` counts the tokens the model actually read. Reads the embedder pool from
the app; errors are raised from ``gateway.core.errors``, never rendered here. Each call that passed
its checks gets a ledger row and an access line (``account_embeddings``); one refused before
that is recorded by the error middleware as a refusal.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from embedder_worker.client import (
    EmbedderError,
    EmbedderPool,
    EmbedderRequestError,
    EmbedderUnavailable,
    Embeddings,
)
from embedder_worker.supervisor import EMBEDDER_POOL
from gateway.api.body import read_body
from gateway.api.caller import caller
from gateway.core.chat import field_error, json_object
from gateway.core.errors import GatewayError, InvalidRequest, ModelNotFound, ServiceUnavailable
from gateway.core.requestctx import ACCOUNTED, REQUEST_ID
from gateway.core.timing import Timing
from gateway.pipeline.accounting import account_embeddings

MAX_INPUTS = 2048  # OpenAI's own limit on the number of inputs in one request
MAX_INPUT_CHARS = 100_000  # far beyond max_length tokens; keeps frames small
EncodingFormat = Literal["float", "base64"]
TOKEN_IDS_REFUSED = (
    "Token-id input is not supported here (the gateway's model has its own tokenizer); send "
    "the text as strings. LangChain's OpenAIEmbeddings sends token ids unless given "
    "check_embedding_ctx_length=False."
)


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    texts: tuple[str, ...]
    model: str
    encoding_format: EncodingFormat
    dimensions: int | None


def _texts(value: Any) -> tuple[str, ...]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise field_error("input", "a string or a non-empty array of strings", value)
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"'input' may hold at most {MAX_INPUTS} items.", param="input")
    for text in texts:
        if isinstance(text, int | list):
            raise InvalidRequest(TOKEN_IDS_REFUSED, param="input")
        if not isinstance(text, str) or not text:
            raise field_error("input", "non-empty strings", text)
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidRequest(
                f"Each input may be at most {MAX_INPUT_CHARS} characters long.", param="input"
            )
    return tuple(texts)


def _options(body: Mapping[str, Any]) -> tuple[EncodingFormat, int | None]:
    encoding: EncodingFormat
    match body.get("encoding_format"):
        case None | "float":
            encoding = "float"
        case "base64":
            encoding = "base64"
        case other:
            raise field_error("encoding_format", "'float' or 'base64'", other)
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise field_error("dimensions", "an integer", dimensions)
    return encoding, dimensions


def parse_embeddings_request(raw: bytes) -> EmbeddingsRequest:
    """Validate an OpenAI embeddings body; raise ``InvalidRequest`` naming the field."""
    body = json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise field_error("model", "a non-empty string", model)
    encoding, dimensions = _options(body)
    return EmbeddingsRequest(_texts(body.get("input")), model, encoding, dimensions)


def _check_model(pool: EmbedderPool, parsed: EmbeddingsRequest) -> str:
    """The served model's name, once the request is known to fit it."""
    info = pool.info
    if info is None:
        raise ServiceUnavailable("The embedding model is not loaded yet.", code="embedder_starting")
    if parsed.model != info.name and not parsed.model.endswith("/" + info.name):
        raise ModelNotFound(
            f"The model '{parsed.model}' does not exist; this gateway embeds with '{info.name}'.",
            param="model",
        )
    if parsed.dimensions is not None and parsed.dimensions != info.dim:
        raise InvalidRequest(
            f"'{info.name}' only produces {info.dim} dimensions, not {parsed.dimensions}.",
            param="dimensions",
        )
    return info.name


async def _embed(pool: EmbedderPool, texts: tuple[str, ...]) -> Embeddings:
    try:
        return await pool.embed_with_usage(texts)
    except EmbedderUnavailable as exc:
        raise ServiceUnavailable(
            f"The embedding workers are unavailable: {exc}", code="embedder_unavailable"
        ) from exc
    except EmbedderRequestError as exc:
        raise InvalidRequest(f"The embedding worker refused the input: {exc}") from exc
    except EmbedderError as exc:
        raise GatewayError(f"The embedding worker failed: {exc}") from exc


def render(result: Embeddings, model: str, encoding: EncodingFormat) -> bytes:
    """The OpenAI response body."""
    if encoding == "base64":
        rows: list[Any] = [
            base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in result.vectors
        ]
    else:
        rows = list(result.vectors)
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    body = {"object": "list", "data": data, "model": model, "usage": usage}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


async def create_embeddings(request: web.Request) -> web.StreamResponse:
    timing = Timing()
    principal = caller(request)
    parsed = parse_embeddings_request(await read_body(request))
    pool = request.app.get(EMBEDDER_POOL)
    if pool is None:
        raise ModelNotFound(f"The model '{parsed.model}' does not exist; this gateway serves no "
                            "embedding model ([embedder] enabled = false).", param="model")
    model = _check_model(pool, parsed)
    timing.mark("parse")
    request[ACCOUNTED] = True  # from here on, a ledger row says how the call ended
    try:
        result = await _embed(pool, parsed.texts)
    except GatewayError as error:
        account_embeddings(request, principal, model, 0, error.status, timing.elapsed_ms(),
                           error.code or error.error_type)
        raise
    timing.mark("embed")
    account_embeddings(request, principal, model, result.prompt_tokens, 200,
                       timing.elapsed_ms())
    body = render(result, model, parsed.encoding_format)
    headers = {"x-request-id": request[REQUEST_ID], "Server-Timing": timing.header()}
    return web.Response(body=body, content_type="application/json", headers=headers)
