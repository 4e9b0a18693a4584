"""The Anthropic adapter: OpenAI chat completions to the Messages API and back.

Requests: system and developer messages are joined into the top-level ``system`` string;
user and assistant messages become content blocks (same-role neighbours merged, as the API
wants turns to alternate); assistant tool calls become ``tool_use`` blocks and tool messages
``tool_result`` blocks in a user turn. ``max_tokens`` is required by Anthropic: the client's, or
4096. Answers come back as a ``chat.completion`` or as chunks from the event stream
(``message_start`` … ``message_stop``), translated in ``anthropic_answers``.

Choices made here:

- What Anthropic cannot express is ``UpstreamFailure(UNSUPPORTED)``, so failover tries the
  next deployment: ``n`` above 1 (one answer per call), the legacy ``function`` role, audio
  and other part types without an equivalent, images other than JPEG, PNG, GIF and WebP,
  files other than PDF or by OpenAI file id, a conversation of nothing but system messages,
  and a JSON ``response_format`` combined with client ``tools`` (see below). Input malformed
  for any provider stays ``InvalidRequest``.
- ``response_format`` json_object / json_schema is honoured with a forced tool whose input
  schema is the requested schema (``json_object``: any object); the tool's input comes back as
  the message content, so the JSON is enforced by the API, not asked for in the prompt.
- ``temperature`` above 1 (Anthropic's maximum) is clamped to 1.
- ``parallel_tool_calls: false`` becomes ``disable_parallel_tool_use``; ``user`` becomes
  ``metadata.user_id``.

A request that arrived in Anthropic's own dialect (``ChatRequest.native``, from
``/v1/messages``) is sent as the client wrote it, only the model swapped, with its
``anthropic-version`` and ``anthropic-beta``; the answer keeps the upstream's own message
(``Completion.native``) and each stream chunk carries the events it came from
(``NATIVE_EVENTS``), so thinking blocks, signatures and ``cache_control`` survive the trip.

Lossy: system messages in the middle of the conversation move to the top; ``seed``,
``presence_penalty``, ``frequency_penalty`` and ``logprobs`` are not sent. Not lost: cache
writes are priced by their lifetime, as Anthropic bills them (5-minute ones at
``cache_write_price_per_mtok``, 1-hour ones at ``cache_write_1h_price_per_mtok``), from the
split its usage tells (``anthropic_answers``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from functools import partial

import orjson

from gateway.core.answer import (
    Completion,
    Deployment,
    Json,
    completion_id,
    now_s,
)
from gateway.core.chat import ChatRequest, Message, Native
from gateway.upstream.calls import Upstream
from gateway.upstream.chunk_stream import ChunkStream
from gateway.upstream.http_response import Response
from gateway.upstream.providers.anthropic_answers import (
    JSON_TOOL,
    MessagesChunks,
    MessagesStream,
    completion_from,
)
from gateway.upstream.providers.parts import (
    InlineData,
    file_data,
    function_call,
    image_url,
    inline_data,
    is_web_url,
    unsupported,
)

API_VERSION = "2023-06-01"
DIALECT = "anthropic"
"""``Native.dialect`` of a request this adapter can send as it came."""
DEFAULT_MAX_TOKENS = 4096
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


class AnthropicProvider:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def _headers(self, deployment: Deployment, native: Native | None) -> dict[str, str]:
        p = deployment.provider
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if native is not None:
            headers.update(native.headers)  # the client's anthropic-version and -beta
        headers.update(p.headers)
        if p.api_key:
            headers["x-api-key"] = p.api_key
        return headers

    async def complete(self, request: ChatRequest, deployment: Deployment) -> Completion:
        native = _native(request)
        model = deployment.model.upstream_model
        resp = await self.upstream.post_json(
            f"{deployment.provider.base_url}/messages",
            headers=self._headers(deployment, native),
            body=_body(request, native, model, stream=False),
            timeouts=deployment.provider.timeouts,
        )
        answer = completion_from(resp.body, model, native is None and _json_mode(request))
        if native is not None:
            answer = Completion(answer.body, answer.usage, resp.body)
        return answer

    def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncGenerator[Json, None]:
        """A ``ChunkStream``: the relay can have its chunks pushed (no task wake per chunk)."""
        native = _native(request)
        model = deployment.model.upstream_model
        state = MessagesStream(completion_id(), now_s(), model,
                               native is None and _json_mode(request))
        return ChunkStream(partial(self._open_stream, request, deployment, native),
                           MessagesChunks(state, native is not None),
                           deployment.provider.timeouts.chunk_timeout_s)

    async def _open_stream(self, request: ChatRequest, deployment: Deployment,
                           native: Native | None) -> Response:
        return await self.upstream.open_event_stream(
            f"{deployment.provider.base_url}/messages",
            headers=self._headers(deployment, native),
            body=_body(request, native, deployment.model.upstream_model, stream=True),
            timeouts=deployment.provider.timeouts,
        )



def _native(request: ChatRequest) -> Native | None:
    native = request.native
    return native if native is not None and native.dialect == DIALECT else None


def _body(request: ChatRequest, native: Native | None, model: str, *, stream: bool) -> bytes:
    if native is None:
        return request_body(request, model, stream=stream)
    body = {**native.body, "model": model}
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return orjson.dumps(body)




# --- request -------------------------------------------------------------------------------


def request_body(request: ChatRequest, model: str, *, stream: bool) -> bytes:
    """The Messages API body for ``request``.

    Raises ``InvalidRequest`` for malformed input, ``UpstreamFailure(UNSUPPORTED)`` for what
    Anthropic cannot express.
    """
    if request.n > 1:
        raise unsupported(f"Anthropic models give one choice per request (n={request.n}).")
    system, messages = _messages(request.messages)
    if not messages:
        raise unsupported("Anthropic needs at least one message besides system messages.")
    body: Json = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = system
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    user = request.body.get("user")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    body.update(_tools(request))
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def _messages(messages: tuple[Message, ...]) -> tuple[str, list[Json]]:
    system: list[str] = []
    out: list[Json] = []
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            system.append(m.text)
            continue
        role, blocks = _turn(i, m)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), out


def _turn(i: int, m: Message) -> tuple[str, list[Json]]:
    if m.role == "function":
        raise unsupported(
            f"The legacy 'function' role (messages[{i}]) cannot be sent to Anthropic; "
            "use tool messages."
        )
    if m.role == "tool":
        result: Json = {"type": "tool_result", "tool_use_id": _tool_id(m.tool_call_id or "")}
        if m.text:
            result["content"] = m.text
        return "user", [result]
    blocks = _content_blocks(i, m)
    if m.role == "assistant":
        return "assistant", blocks + [_tool_use(i, j, c) for j, c in enumerate(m.tool_calls)]
    return "user", blocks


def _tool_id(call_id: str) -> str:
    # Anthropic accepts only [A-Za-z0-9_-] in ids; ids made by other providers may not fit.
    return _ID_UNSAFE.sub("_", call_id)


def _content_blocks(i: int, m: Message) -> list[Json]:
    if isinstance(m.content, str):
        return [{"type": "text", "text": m.content}] if m.content else []
    blocks = [_block(f"messages[{i}].content[{j}]", p) for j, p in enumerate(m.content or ())]
    # Anthropic refuses empty text blocks.
    return [b for b in blocks if b.get("type") != "text" or b.get("text")]


def _block(where: str, part: Json) -> Json:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        return _image(image_url(part), f"{where}.image_url.url")
    if kind == "file":
        return _document(file_data(part, where, "Anthropic"), f"{where}.file.file_data")
    raise unsupported(f"Anthropic cannot take content parts of type {kind!r} ('{where}').")


def _image(url: object, where: str) -> Json:
    if is_web_url(url):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media = inline_data(url, where, "Anthropic")
    if media.media_type not in _IMAGE_TYPES:
        raise unsupported(f"Anthropic cannot take {media.media_type} images ('{where}').")
    return {"type": "image", "source": _base64_source(media)}


def _document(media: InlineData, where: str) -> Json:
    if media.media_type != "application/pdf":
        raise unsupported(f"Anthropic cannot take {media.media_type} files ('{where}').")
    return {"type": "document", "source": _base64_source(media)}


def _base64_source(media: InlineData) -> Json:
    return {"type": "base64", "media_type": media.media_type, "data": media.data}


def _tool_use(i: int, j: int, call: Json) -> Json:
    parsed = function_call(call, f"messages[{i}].tool_calls[{j}].function")
    call_id = _tool_id(str(call.get("id") or f"call_{i}_{j}"))
    return {"type": "tool_use", "id": call_id, "name": parsed.name, "input": parsed.arguments}


def _tools(request: ChatRequest) -> Json:
    if _json_mode(request):
        return _json_tool(request)
    if not request.tools:
        return {}
    tools = []
    for tool in request.tools:
        function = tool["function"]
        spec: Json = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        tools.append(spec)
    out: Json = {"tools": tools}
    choice = _tool_choice(request.tool_choice, request.body.get("parallel_tool_calls") is False)
    if choice:
        out["tool_choice"] = choice
    return out


def _json_tool(request: ChatRequest) -> Json:
    """A forced tool whose input is the JSON answer the response format asks for."""
    if request.tools:
        # The JSON answer is itself a forced tool call, which leaves the client's tools unusable.
        raise unsupported("Anthropic cannot combine a JSON response_format with tools.")
    tool: Json = {
        "name": JSON_TOOL,
        "description": "Give the answer as this tool's input.",
        "input_schema": _json_schema(request.response_format or {}),
    }
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": JSON_TOOL}}


def _tool_choice(choice: str | Json | None, serial: bool) -> Json | None:
    if isinstance(choice, dict):
        out: Json = {"type": "tool", "name": choice["function"].get("name")}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "auto" or serial:
        out = {"type": "auto"}
    else:
        return None
    if serial:
        out["disable_parallel_tool_use"] = True
    return out


def _json_mode(request: ChatRequest) -> bool:
    fmt = request.response_format or {}
    return fmt.get("type") in ("json_object", "json_schema")


def _json_schema(fmt: Json) -> Json:
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {"type": "object"}
