"""What may be stored, and how a stored answer is served again.

``uncacheable(body)`` says why a ``chat.completion`` must not be stored (an error, a truncated
answer with ``finish_reason: length``, a filtered one, an empty one) or None when it may.
``assemble_chunks(chunks)`` turns a relayed stream back into a ``chat.completion`` when, and only
when, the stream finished (every choice has a finish reason); a stream that broke off is never
stored. ``replay_body`` and ``replay_chunks`` serve a hit as JSON or as OpenAI
``chat.completion.chunk`` objects (role, content pieces, tool calls, finish, optional usage).

A hit costs nothing upstream, so its usage is reported as zero tokens (``usage`` all zeros); the
ledger therefore charges nothing for it. Pure functions.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from gateway.core.answer import chunk, completion_id, now_s

Json = dict[str, Any]
CACHEABLE_FINISH = frozenset({"stop", "tool_calls", "function_call"})
_PIECE = re.compile(r"\S+\s*|\s+")
_PIECE_CHARS = 48
ZERO_USAGE: Json = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def uncacheable(body: Any) -> str | None:
    """Why ``body`` must not be stored, or None when it is a whole, successful answer."""
    if not isinstance(body, dict) or "error" in body:
        return "not a successful answer"
    if body.get("object") not in (None, "chat.completion"):
        return "not a chat.completion"
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            return "a choice without a message"
        reason = choice.get("finish_reason")
        if reason not in CACHEABLE_FINISH:
            return f"finish_reason {reason!r}"
        message = choice["message"]
        if not message.get("content") and not message.get("tool_calls"):
            return "an empty answer"
    return None


def replay_body(body: Json) -> Json:
    """The stored answer as a fresh ``chat.completion``: new id and time, zero usage."""
    out = copy.deepcopy(body)
    out["id"] = completion_id()
    out["created"] = now_s()
    out["usage"] = dict(ZERO_USAGE)
    return out


def replay_chunks(completion_body: Json, include_usage: bool) -> list[Json]:
    """The stored answer as the chunks of a stream, ready to be written as SSE events."""
    chunk_id, created = completion_id(), now_s()
    model = str(completion_body.get("model", ""))
    out: list[Json] = []
    for position, choice in enumerate(completion_body.get("choices", [])):
        index = int(choice.get("index", position))
        for delta, finish in _choice_deltas(choice):
            item = chunk(chunk_id, model, created, delta, finish)
            item["choices"][0]["index"] = index
            out.append(item)
    fingerprint = completion_body.get("system_fingerprint")
    if fingerprint is not None:
        for item in out:
            item["system_fingerprint"] = fingerprint
    if include_usage:
        out.append({
            "id": chunk_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": dict(ZERO_USAGE),
        })
    return out


def _choice_deltas(choice: Json) -> Iterable[tuple[Json, str | None]]:
    message = choice.get("message", {})
    yield {"role": message.get("role", "assistant"), "content": ""}, None
    content = message.get("content")
    if isinstance(content, str):
        for piece in _pieces(content):
            yield {"content": piece}, None
    if message.get("refusal"):
        yield {"refusal": message["refusal"]}, None
    for position, call in enumerate(message.get("tool_calls") or []):
        yield {"tool_calls": [{"index": position, **call}]}, None
    yield {}, choice.get("finish_reason", "stop")


def _pieces(text: str) -> list[str]:
    """Word-aligned pieces of about ``_PIECE_CHARS`` characters, joining back to ``text``."""
    pieces: list[str] = []
    current = ""
    for match in _PIECE.finditer(text):
        current += match.group()
        if len(current) >= _PIECE_CHARS:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def assemble_chunks(chunks: Iterable[Json]) -> Json | None:
    """A finished stream's ``chat.completion``, or None when any choice never finished."""
    choices: dict[int, Json] = {}
    head: Json = {}
    usage = None
    for item in chunks:
        usage = item.get("usage") or usage
        if not (delta_choices := item.get("choices")):
            continue  # a usage chunk, or Azure's first (prompt filters, no id or model)
        head = head or item
        for delta_choice in delta_choices:
            _merge(choices.setdefault(int(delta_choice.get("index", 0)), _blank()), delta_choice)
    if not choices or any(c["finish_reason"] is None for c in choices.values()):
        return None
    return {
        "id": head.get("id", completion_id()),
        "object": "chat.completion",
        "created": head.get("created", now_s()),
        "model": head.get("model", ""),
        "choices": [_finish(i, c) for i, c in sorted(choices.items())],
        **({"usage": usage} if usage else {}),
    }


def _blank() -> Json:
    return {"role": "assistant", "content": [], "refusal": [], "tool_calls": {},
            "finish_reason": None}


def _merge(target: Json, delta_choice: Json) -> None:
    delta = delta_choice.get("delta") or {}
    if delta.get("role"):
        target["role"] = delta["role"]
    if delta.get("content"):
        target["content"].append(delta["content"])
    if delta.get("refusal"):
        target["refusal"].append(delta["refusal"])
    for call in delta.get("tool_calls") or []:
        _merge_tool_call(target["tool_calls"], call)
    if delta_choice.get("finish_reason"):
        target["finish_reason"] = delta_choice["finish_reason"]


def _merge_tool_call(calls: dict[int, Json], part: Json) -> None:
    call = calls.setdefault(int(part.get("index", 0)), {"function": {"arguments": ""}})
    for key in ("id", "type"):
        if part.get(key):
            call[key] = part[key]
    function = part.get("function") or {}
    if function.get("name"):
        call["function"]["name"] = function["name"]
    call["function"]["arguments"] += function.get("arguments") or ""


def _finish(index: int, c: Json) -> Json:
    message: Json = {"role": c["role"], "content": "".join(c["content"]) or None}
    if c["refusal"]:
        message["refusal"] = "".join(c["refusal"])
    if c["tool_calls"]:
        message["tool_calls"] = [
            {"type": "function", **call} for _, call in sorted(c["tool_calls"].items())
        ]
    return {"index": index, "message": message, "logprobs": None,
            "finish_reason": c["finish_reason"]}
