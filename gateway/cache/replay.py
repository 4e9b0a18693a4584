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

from gateway.core.answer import as_index, as_list, as_obj, as_str, chunk, completion_id, now_s

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
        if not isinstance(reason, str) or reason not in CACHEABLE_FINISH:
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
    # The stored answer is a provider's: read as untrusted JSON, like the chunks below.
    for position, choice in enumerate(map(as_obj, as_list(completion_body.get("choices")))):
        index = as_index(choice.get("index"), position)
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
    message = as_obj(choice.get("message"))
    yield {"role": as_str(message.get("role"), "assistant"), "content": ""}, None
    content = message.get("content")
    if isinstance(content, str):
        for piece in _pieces(content):
            yield {"content": piece}, None
    if refusal := as_str(message.get("refusal")):
        yield {"refusal": refusal}, None
    for position, call in enumerate(as_list(message.get("tool_calls"))):
        yield {"tool_calls": [{"index": position, **as_obj(call)}]}, None
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
        if not (delta_choices := as_list(item.get("choices"))):
            continue  # a usage chunk, or Azure's first (prompt filters, no id or model)
        head = head or item
        for delta_choice in map(as_obj, delta_choices):
            _merge(choices.setdefault(as_index(delta_choice.get("index")), _blank()), delta_choice)
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
    """One chunk's choice into ``target``. The chunks are a provider's, untrusted: a part of
    the wrong type is left out rather than raising after the answer went out."""
    delta = as_obj(delta_choice.get("delta"))
    if role := as_str(delta.get("role")):
        target["role"] = role
    if content := as_str(delta.get("content")):
        target["content"].append(content)
    if refusal := as_str(delta.get("refusal")):
        target["refusal"].append(refusal)
    for call in as_list(delta.get("tool_calls")):
        _merge_tool_call(target["tool_calls"], as_obj(call))
    if finish := as_str(delta_choice.get("finish_reason")):
        target["finish_reason"] = finish


def _merge_tool_call(calls: dict[int, Json], part: Json) -> None:
    call = calls.setdefault(as_index(part.get("index")), {"function": {"arguments": ""}})
    for key in ("id", "type"):
        if value := as_str(part.get(key)):
            call[key] = value
    function = as_obj(part.get("function"))
    if name := as_str(function.get("name")):
        call["function"]["name"] = name
    call["function"]["arguments"] += as_str(function.get("arguments"))


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
