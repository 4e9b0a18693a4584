"""Anthropic Messages requests → the gateway's ``ChatRequest``: the translation at the edge.

``messages_request`` validates a ``POST /v1/messages`` body (each field's shape here, and
Anthropic's rules across its blocks in ``gateway.api.messages_rules``) and builds the equivalent
chat completions body (so routing, the cache, quotas and every provider adapter see one request),
keeping the client's own body as ``ChatRequest.native`` for an Anthropic upstream, which then
receives it untouched: thinking blocks and their signatures, ``cache_control``, ``top_k``,
``thinking`` and beta fields all survive there.

Translated for other upstreams: ``system`` (string or text blocks) becomes a system message;
text and image blocks become content parts, base64 PDF documents ``file`` parts and plain-text
documents text; ``tool_use`` blocks become assistant tool calls and ``tool_result`` blocks
``tool`` messages (placed before the rest of their user turn, as chat completions wants);
custom tools, ``tool_choice``, ``stop_sequences``, ``max_tokens``, ``temperature``, ``top_p``,
``metadata.user_id`` (as ``user``) and ``output_config.format`` (as ``response_format``) map
one to one. Left out of a translation, as the model's own record or a hint only: thinking and
redacted thinking blocks, ``cache_control``, ``top_k``, ``thinking``, ``service_tier``.

What only Anthropic can carry (server tools such as web search, code execution, computer use,
bash or the text editor; MCP servers, containers, context management; files by id, images in
tool results, search results and other blocks) makes the request native-only
(``Native.only``): it still goes through keys, limits and routing, from a text view of the
conversation and with the whole body in its cache fingerprint, and reaches an Anthropic
upstream as sent; any other provider refuses it, so a model with no Anthropic deployment
answers 400 naming the field, never a silent drop. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from gateway.api.call_ids import unfold
from gateway.api.messages_rules import check_rules
from gateway.core.answer import as_str
from gateway.core.chat import ChatRequest, Json, Native, chat_request, field_error
from gateway.core.errors import InvalidRequest

DIALECT = "anthropic"
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")
_UNSUPPORTED_FIELDS = ("container", "mcp_servers", "context_management")
_TRANSLATED_BLOCKS = {
    "user": frozenset({"text", "image", "document", "tool_result"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking"}),
}
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def messages_request(
    body: Json, headers: Mapping[str, str], *, counting: bool = False
) -> ChatRequest:
    """The ``ChatRequest`` for a Messages body; ``InvalidRequest`` naming the field.

    ``counting`` is for ``count_tokens``, whose body has no ``max_tokens``.
    """
    chat: Json = {"model": body.get("model")}
    if not counting:
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise field_error("max_tokens", "an integer of 1 or more", max_tokens)
        chat["max_tokens"] = max_tokens
    _copy_options(body, chat)
    check_rules(body)
    only: tuple[str, ...] = ()
    try:
        for name in _UNSUPPORTED_FIELDS:
            if body.get(name) is not None:
                raise _unsupported(name, "needs an Anthropic upstream")
        chat["messages"] = _messages(body)
        chat.update(_tools(body.get("tools"), body.get("tool_choice")))
    except _NativeOnly as needed:
        only = (needed.param or "",)
        chat["messages"] = _text_view(body)
        chat["x_gateway_native_body"] = body  # what the cache fingerprint must cover
    passed = {k: _passed_header(k, v) for k in PASSED_HEADERS if (v := headers.get(k)) is not None}
    return replace(chat_request(chat), native=Native(DIALECT, body, passed, only))


def _passed_header(name: str, value: str) -> str:
    """A header sent on to the provider: printable ASCII, as its values are, or a 400 here
    rather than a refused upstream call (counted against the deployment's health)."""
    if not (value.isascii() and value.isprintable()):
        raise InvalidRequest(f"Invalid value for header '{name}': expected printable ASCII.",
                             param=name)
    return value


class _NativeOnly(InvalidRequest):
    """A part only an Anthropic upstream can take."""


def _unsupported(param: str, why: str) -> _NativeOnly:
    return _NativeOnly(f"'{param}' {why}.", param=param, code="unsupported_parameter")


def _text_view(body: Json) -> list[Json]:
    """The conversation's text alone: what routing, limits and the cache key need."""
    out = [{"role": "system", "content": system}] if (system := _system(body.get("system"))) \
        else []
    for i, m in enumerate(_checked_messages(body.get("messages"))):
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(b["text"] for b in content
                                if isinstance(b, dict) and isinstance(b.get("text"), str))
        if not isinstance(content, str):
            raise field_error(f"messages[{i}].content", "a string or an array of blocks", content)
        out.append({"role": m["role"], "content": content})
    return out


def _checked_messages(messages: Any) -> list[Json]:
    if not isinstance(messages, list) or not messages:
        raise field_error("messages", "a non-empty array", messages)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or as_str(m.get("role")) not in _TRANSLATED_BLOCKS:
            raise InvalidRequest(f"Invalid value for 'messages[{i}].role': expected 'user' or "
                                 "'assistant'.", param=f"messages[{i}].role")
    return messages


def _copy_options(body: Json, chat: Json) -> None:
    stream = body.get("stream")
    if stream is not None:
        chat["stream"] = stream
        if stream is True:
            chat["stream_options"] = {"include_usage": True}
    _sampling(body, chat)
    _check_object(body, "thinking")
    user = _check_object(body, "metadata").get("user_id")
    if isinstance(user, str) and user:
        chat["user"] = user
    fmt = _check_object(_check_object(body, "output_config"), "format", "output_config.format")
    if fmt:
        if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise field_error("output_config.format", "a json_schema format with a schema", fmt)
        chat["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _sampling(body: Json, chat: Json) -> None:
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) \
                or len(stops) > 4:
            raise field_error("stop_sequences", "an array of up to 4 strings", stops)
        if stops:
            chat["stop"] = stops
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, int | float)
                                    or not 0 <= temperature <= 1):
        raise field_error("temperature", "a number from 0 to 1", temperature)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise field_error("top_k", "a non-negative integer", top_k)


def _check_object(body: Json, name: str, where: str | None = None) -> Json:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise field_error(where or name, "an object", value)
    return value


# --- messages ------------------------------------------------------------------------------


def _messages(body: Json) -> list[Json]:
    out: list[Json] = []
    system = _system(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for i, m in enumerate(_checked_messages(body.get("messages"))):
        out.extend(_message(i, m))
    return unfold(out)


def _system(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        texts = []
        for j, block in enumerate(value):
            if not isinstance(block, dict) or block.get("type") != "text" \
                    or not isinstance(block.get("text"), str):
                raise field_error(f"system[{j}]", "a text block", block)
            texts.append(block["text"])
        return "\n\n".join(texts)
    raise field_error("system", "a string or an array of text blocks", value)


def _message(i: int, m: Json) -> list[Json]:
    where = f"messages[{i}]"
    role, content = m["role"], m.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise field_error(f"{where}.content", "a string or an array of content blocks", content)
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if as_str(kind) not in _TRANSLATED_BLOCKS[role]:
            raise _unsupported(f"{where}.content[{j}].type",
                               f"{kind!r} blocks in {role} turns need an Anthropic upstream")
    blocks = [b for b in content if b["type"] not in _SKIPPED_BLOCKS]
    if role == "assistant":
        return [_assistant(where, blocks)]
    return _user(where, blocks)


def _assistant(where: str, blocks: list[Json]) -> Json:
    texts, calls = [], []
    for j, block in enumerate(blocks):
        if block["type"] == "text":
            texts.append(_text(f"{where}.content[{j}]", block))
            continue
        name, call_id, args = block.get("name"), block.get("id"), block.get("input", {})
        if not isinstance(name, str) or not isinstance(call_id, str) or not isinstance(args, dict):
            raise field_error(f"{where}.content[{j}]", "a tool_use block with id, name, input",
                              block)
        calls.append({"id": call_id, "type": "function",
                      "function": {"name": name, "arguments": orjson.dumps(args).decode()}})
    message: Json = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _user(where: str, blocks: list[Json]) -> list[Json]:
    results = [_tool_result(f"{where}.content[{j}]", b) for j, b in enumerate(blocks)
               if b["type"] == "tool_result"]
    parts = [_part(f"{where}.content[{j}]", b) for j, b in enumerate(blocks)
             if b["type"] != "tool_result"]
    if not parts:
        return results
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*results, {"role": "user", "content": parts[0]["text"]}]
    return [*results, {"role": "user", "content": parts}]


def _text(where: str, block: Json) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise field_error(f"{where}.text", "a string", text)
    return text


def _part(where: str, block: Json) -> Json:
    if block["type"] == "text":
        return {"type": "text", "text": _text(where, block)}
    source = block.get("source")
    if not isinstance(source, dict):
        raise field_error(f"{where}.source", "an object", source)
    kind = source.get("type")
    if block["type"] == "image" and kind in ("base64", "url"):
        return {"type": "image_url", "image_url": {"url": _url(where, source)}}
    if block["type"] == "document" and kind == "text":
        return {"type": "text", "text": _text(f"{where}.source", {"text": source.get("data")})}
    if block["type"] == "document" and kind == "base64":
        return {"type": "file", "file": {"file_data": _url(where, source),
                                         "filename": str(block.get("title") or "document.pdf")}}
    raise _unsupported(f"{where}.source.type",
                       f"{kind!r} sources of {block['type']} blocks need an Anthropic upstream")


def _url(where: str, source: Json) -> str:
    if source.get("type") == "url":
        url = source.get("url")
        if not isinstance(url, str):
            raise field_error(f"{where}.source.url", "a string", url)
        return url
    return f"data:{source['media_type']};base64,{source['data']}"  # checked by check_rules


def _tool_result(where: str, block: Json) -> Json:
    call_id, content = block["tool_use_id"], block.get("content", "")  # checked by check_rules
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _unsupported(f"{where}.content[{k}]",
                                   "holds a block other than text: it needs an Anthropic upstream")
            texts.append(_text(f"{where}.content[{k}]", part))
        content = "\n".join(texts)
    elif not isinstance(content, str):
        raise field_error(f"{where}.content", "a string or an array of text blocks", content)
    return {"role": "tool", "tool_call_id": call_id, "content": content}


# --- tools ---------------------------------------------------------------------------------


def _tools(tools: Any, choice: Any) -> Json:
    out: Json = {}
    if tools is not None:
        if not isinstance(tools, list):
            raise field_error("tools", "an array", tools)
        out["tools"] = [_tool(i, t) for i, t in enumerate(tools)]
    if choice is None:
        return out
    kind = choice["type"]  # checked by check_rules, as is a tool's name
    out["tool_choice"] = _TOOL_CHOICES[kind] if kind in _TOOL_CHOICES \
        else {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


def _tool(i: int, tool: Any) -> Json:
    if not isinstance(tool, dict):
        raise field_error(f"tools[{i}]", "an object", tool)
    if tool.get("type", "custom") not in ("custom", None):
        raise _unsupported(f"tools[{i}].type", f"{tool.get('type')!r} is a server tool: it "
                           "needs an Anthropic upstream")
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name:
        raise field_error(f"tools[{i}].name", "a non-empty string", name)
    if not isinstance(schema, dict):
        raise field_error(f"tools[{i}].input_schema", "a JSON schema object", schema)
    function: Json = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}
