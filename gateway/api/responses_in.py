"""OpenAI Responses requests → the gateway's ``ChatRequest``: the translation at the edge.

``responses_request`` validates a ``POST /v1/responses`` body and builds the equivalent chat
completions body, after the conversation of the ``previous_response_id`` when there is one
(``history``, chat messages kept by the response store). Translated: ``input`` as a string or
items (messages with ``input_text``/``output_text``/``refusal``, ``input_image`` and inline
``input_file`` parts; ``function_call`` and ``function_call_output`` items), ``instructions``
(a system message, not carried to follow-ups, as OpenAI does), function tools and
``tool_choice``, ``text.format`` (text, JSON object, JSON schema), ``max_output_tokens``,
``temperature``, ``top_p``, ``parallel_tool_calls`` and ``user``. Accepted as hints, not sent
upstream: ``reasoning``, ``include``, ``truncation``, ``service_tier``, ``prompt_cache_key``,
``safety_identifier``, ``metadata`` and ``store`` (the gateway's own business); ``reasoning``
items in the input (a model's own earlier reasoning) are left out.

Refused with a 400 naming the field, never dropped: built-in tools (web search, file search,
computer use, code interpreter, MCP, image generation, shell…), files and images by id or URL of
a file, item references, ``background``, ``conversation`` and stored ``prompt`` templates.
Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.api.call_ids import unfold
from gateway.core.answer import as_str
from gateway.core.chat import ChatRequest, Json, chat_request, field_error
from gateway.core.errors import InvalidRequest

_REFUSED_FIELDS = ("background", "conversation", "prompt")
_TEXT_PARTS = frozenset({"input_text", "output_text"})
_ROLES = frozenset({"user", "assistant", "system", "developer"})
_CHOICES = frozenset({"none", "auto", "required"})


@dataclass(frozen=True, slots=True)
class Translated:
    chat: ChatRequest
    messages: tuple[Json, ...]
    """The conversation sent upstream minus ``instructions``: what a follow-up continues."""


def responses_request(body: Json, history: Sequence[Json] = ()) -> Translated:
    """The ``ChatRequest`` for a Responses body; ``InvalidRequest`` naming the field."""
    for name in _REFUSED_FIELDS:
        if body.get(name) not in (None, False):
            raise _unsupported(name, "is not supported by this gateway")
    messages = unfold([*history, *input_messages(body.get("input"))])
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise field_error("instructions", "a string", instructions)
    system = [{"role": "system", "content": instructions}] if instructions else []
    chat: Json = {"model": body.get("model"), "messages": [*system, *messages]}
    _copy_options(body, chat)
    chat.update(_tools(body.get("tools"), body.get("tool_choice")))
    return Translated(chat_request(chat), tuple(messages))


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' {why}.", param=param, code="unsupported_parameter")


def _copy_options(body: Json, chat: Json) -> None:
    if body.get("stream") is not None:
        chat["stream"] = body["stream"]
        if body["stream"] is True:
            chat["stream_options"] = {"include_usage": True}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise field_error("max_output_tokens", "an integer of 1 or more", limit)
        chat["max_completion_tokens"] = limit
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    _check_kinds(body)
    fmt = (body.get("text") or {}).get("format")
    if fmt is not None:
        chat["response_format"] = _format(fmt)


def _check_kinds(body: Json) -> None:
    """The fields echoed in the response object, not sent upstream, still have to be right."""
    for name, kind, expected in (("metadata", dict, "an object"), ("reasoning", dict, "an object"),
                                 ("text", dict, "an object"), ("store", bool, "a boolean")):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise field_error(name, expected, body[name])


def _format(fmt: Any) -> Json:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind != "json_schema":
        raise field_error("text.format.type", "'text', 'json_object' or 'json_schema'", kind)
    if not isinstance(fmt.get("schema"), dict) or not isinstance(fmt.get("name"), str):
        raise field_error("text.format", "a json_schema format with a name and a schema", fmt)
    spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
    return {"type": "json_schema", "json_schema": spec}


# --- input items ---------------------------------------------------------------------------


def input_messages(value: Any, where: str = "input") -> list[Json]:
    """Responses input (a string or items, output items included) as chat messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise field_error(where, "a string or a non-empty array of items", value)
    out: list[Json] = []
    for i, item in enumerate(value):
        _item(f"{where}[{i}]", item, out)
    return out


def _item(where: str, item: Any, out: list[Json]) -> None:
    if not isinstance(item, dict):
        raise field_error(where, "an object", item)
    kind = item.get("type", "message")
    if kind == "message":
        out.append(_message(where, item))
    elif kind == "function_call":
        _function_call(where, item, out)
    elif kind == "function_call_output":
        out.append(_call_output(where, item))
    elif kind != "reasoning":
        raise _unsupported(f"{where}.type", f"{kind!r} items are not supported")


def _message(where: str, item: Json) -> Json:
    role, content = item.get("role"), item.get("content")
    if as_str(role) not in _ROLES:
        raise field_error(f"{where}.role", "'user', 'assistant', 'system' or 'developer'", role)
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise field_error(f"{where}.content", "a string or an array of content parts", content)
    parts = [_part(f"{where}.content[{j}]", p) for j, p in enumerate(content)]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    if role != "user" or len(texts) == len(parts):
        if len(texts) != len(parts):
            raise _unsupported(f"{where}.content", f"only text parts are supported in {role} turns")
        return {"role": role, "content": "".join(texts) if role == "assistant" else
                "\n".join(texts)}
    return {"role": role, "content": parts}


def _part(where: str, part: Any) -> Json:
    kind = as_str(part.get("type")) if isinstance(part, dict) else None
    if kind in _TEXT_PARTS or kind == "refusal":
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise field_error(f"{where}.text", "a string", text)
        return {"type": "text", "text": text}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: Json = {"url": part["image_url"]}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        return {"type": "file", "file": {"file_data": part["file_data"],
                                         "filename": str(part.get("filename") or "file")}}
    if kind in ("input_image", "input_file"):
        raise _unsupported(where, "refers to a file by id or URL; send it inline")
    raise _unsupported(f"{where}.type", f"{kind!r} content parts are not supported")


def _function_call(where: str, item: Json, out: list[Json]) -> None:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not isinstance(name, str) \
            or not isinstance(arguments, str):
        raise field_error(where, "a function_call with call_id, name and arguments", item)
    call = {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)  # one turn, several calls
        return
    out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _call_output(where: str, item: Json) -> Json:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise field_error(f"{where}.call_id", "a string", call_id)
    if isinstance(output, list):
        parts = [_part(f"{where}.output[{k}]", p) for k, p in enumerate(output)]
        if any(p["type"] != "text" for p in parts):
            raise _unsupported(f"{where}.output", "may only hold text parts")
        output = "\n".join(p["text"] for p in parts)
    if not isinstance(output, str):
        raise field_error(f"{where}.output", "a string or an array of text parts", output)
    return {"role": "tool", "tool_call_id": call_id, "content": output}


# --- tools ---------------------------------------------------------------------------------


def _tools(tools: Any, choice: Any) -> Json:
    out: Json = {}
    if tools is not None:
        if not isinstance(tools, list):
            raise field_error("tools", "an array", tools)
        if tools:
            out["tools"] = [_tool(i, t) for i, t in enumerate(tools)]
    if choice is None:
        return out
    if as_str(choice) in _CHOICES:
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _unsupported("tool_choice", "must be 'none', 'auto', 'required' or a function")
    return out


def _tool(i: int, tool: Any) -> Json:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise _unsupported(f"tools[{i}].type",
                           f"{kind!r}: built-in tools are not supported, only function tools")
    name, params = tool.get("name"), tool.get("parameters")
    if not isinstance(name, str) or not name:
        raise field_error(f"tools[{i}].name", "a non-empty string", name)
    if params is not None and not isinstance(params, dict):
        raise field_error(f"tools[{i}].parameters", "a JSON schema object", params)
    function: Json = {"name": name, "parameters": params or {"type": "object", "properties": {}}}
    for key in ("description", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}
