"""What a cached answer is keyed by: a context fingerprint and the text compared by meaning.

Two requests may share an answer only when everything except the wording of the last user turn is
identical: the target (model or route), the system prompt and earlier turns, tools, tool choice,
response format, the generation parameters that change answers, and any body field this module does
not know (precision first: an unknown field is assumed to matter). ``fingerprint`` hashes all of
it; ``cache_text`` is the last user turn's text, the only part compared by meaning. When the last
message is not a user turn (a tool result, say), the whole conversation goes into the fingerprint
and the text is empty: such a request can only hit exactly. Non-text parts of the last user turn
(images, audio, files) also go into the fingerprint. Pure functions; touches nothing.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

import orjson

from gateway.core.chat import ChatRequest, Message

# Body fields that never change the answer's content: transport, accounting, routing hints.
_TRANSPORT_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "user", "metadata", "store", "service_tier",
})
# Fields read through the parsed request (``max_tokens`` covers ``max_completion_tokens``).
_PARSED_FIELDS = frozenset({
    "tools", "tool_choice", "response_format", "temperature", "top_p", "n", "seed", "stop",
    "max_tokens", "max_completion_tokens",
})
_KNOWN_FIELDS = _TRANSPORT_FIELDS | _PARSED_FIELDS


def fingerprint(request: ChatRequest, target: str) -> str:
    """A hex digest of the request's context: everything a hit must share besides the text."""
    messages = list(request.messages)
    last = messages[-1]
    asked = _is_user_turn(last)
    context = {
        "target": target,
        "history": [_message(m) for m in (messages[:-1] if asked else messages)],
        "last_parts": _non_text_parts(last) if asked else [],
        "tools": list(request.tools),
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": request.n,
        "seed": request.seed,
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),
        "other": {k: v for k, v in request.body.items() if k not in _KNOWN_FIELDS},
    }
    return hashlib.sha256(_canonical(context)).hexdigest()


def cache_text(request: ChatRequest) -> str:
    """The last user turn's text (normalised), or "" when the last message is not a user turn."""
    last = request.messages[-1]
    return normalize_text(last.text) if _is_user_turn(last) else ""


def normalize_text(text: str) -> str:
    """Unicode NFC, LF line ends, no trailing spaces on a line, no outer blank space.

    Deliberately conservative: case, inner spacing and punctuation can matter (code, maths), so
    the exact tier keeps them; the semantic tier with its guards covers looser variants.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def exact_key(namespace: str, context: str, text: str) -> bytes:
    """The exact tier's key: a digest of namespace, fingerprint and normalised text."""
    return hashlib.sha256(_canonical([namespace, context, text])).digest()


def loose_key(namespace: str, context: str, text: str) -> bytes:
    """The exact tier's second key, for semantic routes: case and punctuation do not count.

    Word characters and operator symbols are kept in order (``C++`` and ``C#`` stay apart);
    everything else (case, spacing, ``?``, ``!``, quotes) is dropped.
    """
    words = _LOOSE_TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())
    return exact_key(namespace, context, "\x00loose\x00" + " ".join(words))


_LOOSE_TOKEN = re.compile(r"[^\W_]+|[+#*/=<>&|^~@{}\[\]\\`$€£¥₹%°.,-](?=\w)|[+#%°]")


def _is_user_turn(message: Message) -> bool:
    return message.role == "user"


def _message(m: Message) -> dict[str, Any]:
    return {
        "role": m.role,
        "content": m.content,
        "name": m.name,
        "tool_calls": list(m.tool_calls),
        "tool_call_id": m.tool_call_id,
    }


def _non_text_parts(m: Message) -> list[Any]:
    if isinstance(m.content, list):
        return [p for p in m.content if not (isinstance(p, dict) and p.get("type") == "text")]
    return [{"name": m.name}] if m.name else []


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
