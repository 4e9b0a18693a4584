"""Gemini's thought signatures, carried through dialects that have no field for them.

Gemini thinking models sign each function call (``thoughtSignature``) and want the signature
back with the call in the next request; chat completions carries it as the tool call's
``extra_content.google.thought_signature``, but Anthropic's ``tool_use`` blocks and the
Responses API's ``function_call`` items have nowhere to put it. So on the way out the signature
is folded into the call's id (``<id>__gsig_<signature in base64url>``: clients echo ids
verbatim and the alphabet fits Anthropic's id pattern), and on the way in ``unfold`` takes it
back out, into the tool call, and restores the plain id on the call and on its result.
Pure functions: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gateway.core.answer import Json, as_obj, as_str

_MARK = "__gsig_"


def outward_id(call: Any) -> str:
    """The id a client sees for ``call``: its own, with its thought signature folded in."""
    call = as_obj(call)
    call_id = as_str(call.get("id"))
    google = as_obj(as_obj(call.get("extra_content")).get("google"))
    signature = google.get("thought_signature")
    if not call_id or not isinstance(signature, str) or not signature:
        return call_id
    folded = base64.urlsafe_b64encode(signature.encode()).rstrip(b"=").decode()
    return f"{call_id}{_MARK}{folded}"


def _split(call_id: str) -> tuple[str, str | None]:
    plain, mark, folded = call_id.partition(_MARK)
    if not mark:
        return call_id, None
    try:
        signature = base64.urlsafe_b64decode(folded + "=" * (-len(folded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return call_id, None  # not one of ours: the id stays as the client sent it
    return plain, signature


def unfold(messages: list[Json]) -> list[Json]:
    """Chat messages (built by a translation, so free to change) with folded ids unfolded."""
    for message in messages:
        for call in message.get("tool_calls") or ():
            call_id, signature = _split(call["id"])
            if signature is not None:
                call["id"] = call_id
                call["extra_content"] = {"google": {"thought_signature": signature}}
        if message.get("role") == "tool":
            message["tool_call_id"] = _split(message["tool_call_id"])[0]
    return messages
