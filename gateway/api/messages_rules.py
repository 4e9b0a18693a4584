"""Anthropic's rules across the blocks of a Messages body, checked before any provider is called.

``gateway.api.messages_in`` checks each field's shape as it translates; these are the rules
Anthropic applies across fields, which reached a provider before: an Anthropic upstream refused
them only once called, other upstreams were sent them translated. Refused here with a 400
naming the field by Anthropic's own path (``messages.3.content.0.tool_use_id``), whichever
upstream the request would have gone to:

1. each ``tool_result`` block of a user turn names a ``tool_use`` block of the assistant turn
   just before it (``gateway.core.tool_turns``; consecutive messages of one role are one turn,
   as Anthropic merges them, and text may follow the results in their turn);
2. an ``image`` or ``document`` block whose ``source.type`` is ``base64`` (in a message, a
   tool result's content, or a document's content) has a ``media_type`` Anthropic takes for
   that block (JPEG, PNG, GIF or WebP images; PDF documents) and ``data`` that is base64;
3. ``tool_choice`` is ``auto``, ``any``, ``none``, or ``tool`` naming one of ``tools`` (unless
   MCP servers or toolsets bring tools whose names the request does not hold).

Only what is well-formed enough to apply a rule to is looked at; the translation refuses the
rest. Pure functions: no I/O.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from typing import Any

from gateway.core.answer import as_obj, as_str
from gateway.core.chat import Json, field_error
from gateway.core.tool_turns import Said, check_answers

_MEDIA_TYPES = {
    "image": ("image/jpeg", "image/png", "image/gif", "image/webp"),
    "document": ("application/pdf",),
}
_TOOL_CHOICES = ("auto", "any", "tool", "none")


def check_rules(body: Json) -> None:
    """``InvalidRequest`` naming the first field of ``body`` that breaks one of the rules."""
    messages = body.get("messages")
    if isinstance(messages, list):
        check_answers(_said(messages), "tool_use block")
        for i, message in enumerate(messages):
            if isinstance(message, dict) and isinstance(message.get("content"), list):
                _sources(f"messages.{i}.content", message["content"])
    _tool_choice(body)


def _said(messages: list[Any]) -> Iterator[Said]:
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        blocks = [(j, b) for j, b in enumerate(content) if isinstance(b, dict)] \
            if isinstance(content, list) else []
        calls = frozenset(b["id"] for _, b in blocks
                          if b.get("type") == "tool_use" and isinstance(b.get("id"), str))
        answers = tuple((f"messages.{i}.content.{j}.tool_use_id", b.get("tool_use_id"))
                        for j, b in blocks if b.get("type") == "tool_result") \
            if role == "user" else ()
        yield Said(str(role), calls, answers)


def _sources(where: str, blocks: list[Any]) -> None:
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        kind, source = as_str(block.get("type")), as_obj(block.get("source"))
        if kind == "tool_result" and isinstance(block.get("content"), list):
            _sources(f"{where}.{j}.content", block["content"])
        elif kind == "document" and source.get("type") == "content" \
                and isinstance(source.get("content"), list):
            _sources(f"{where}.{j}.source.content", source["content"])
        elif kind in _MEDIA_TYPES and source.get("type") == "base64":
            _base64_source(f"{where}.{j}.source", _MEDIA_TYPES[kind], source)


def _base64_source(where: str, media_types: tuple[str, ...], source: Json) -> None:
    media, data = source.get("media_type"), source.get("data")
    if media not in media_types:
        raise field_error(f"{where}.media_type", "one of " + ", ".join(map(repr, media_types)),
                          media)
    if not isinstance(data, str) or not _is_base64(data):
        raise field_error(f"{where}.data", "base64-encoded data", data)


_URL_SAFE = str.maketrans("-_", "+/")


WHOLE_CHECK_CHARS = 1 << 16
"""Base64 data up to this long is decoded whole (0.2 ms at most). Of longer data only these
first characters are decoded, the rest checked to be ASCII: decoding it all held the event loop
about 3 ns a character, 19 ms for a 5 MB image, on every request carrying one, and the mistakes
seen in practice (a ``data:`` URL's prefix, text, raw file bytes) show from the start."""


def _is_base64(data: str) -> bool:
    """Base64 (RFC 4648). Let through rather than refused on a guess: the line breaks MIME
    encoders and the ``base64`` tool put in, the URL-safe alphabet and left-out padding (which
    Gemini takes: protobuf's JSON reads both alphabets, padded or not); padding that is there
    must be right. Past ``WHOLE_CHECK_CHARS`` only the start is decoded."""
    if not data.isascii():
        return False
    if len(data) > WHOLE_CHECK_CHARS:
        head = "".join(data[:WHOLE_CHECK_CHARS].split())
        return _decodes(head[:len(head) - len(head) % 4])
    return _decodes(data) or _decodes("".join(data.split()))


def _decodes(text: str) -> bool:
    text = text.translate(_URL_SAFE)
    if "=" not in text:
        text += "=" * (-len(text) % 4)
    try:
        binascii.a2b_base64(text, strict_mode=True)
    except ValueError:  # binascii.Error
        return False
    return True


def _tool_choice(body: Json) -> None:
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in _TOOL_CHOICES:
        raise field_error("tool_choice.type", "'auto', 'any', 'tool' or 'none'", kind)
    if kind != "tool":
        return
    name, tools = choice.get("name"), body.get("tools")
    tools = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    if body.get("mcp_servers") is not None or any(not isinstance(t.get("name"), str)
                                                  for t in tools):
        names = None  # an MCP server or toolset brings tools of its own: any name may be one
    else:
        names = {t["name"] for t in tools}
    if not isinstance(name, str) or (names is not None and name not in names):
        raise field_error("tool_choice.name", "the name of one of the request's tools", name)
