"""The rule every dialect shares for tool results: each one answers a call of the turn before it.

Anthropic's Messages API (a ``tool_result`` block must name a ``tool_use`` block of the
assistant turn just before its user turn) and OpenAI's chat completions (a ``tool`` message must
name a tool call of the assistant message just before it and its fellow tool messages) refuse
a result that answers nothing; the gateway refuses it too, with a 400 naming the field, before
any provider is called, so no deployment is charged with the client's mistake. Each dialect
reads its messages into ``Said`` values; consecutive messages of one ``turn`` form one turn, as
Anthropic merges consecutive turns of one role. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Said:
    """What one message says about tools."""

    turn: str
    """Whose turn it is (a role); consecutive messages of one turn are one turn."""
    calls: frozenset[str] = frozenset()
    """The ids of the tool calls it makes."""
    answers: tuple[tuple[str, Any], ...] = ()
    """Its tool results: the field that names the call (a path) and what it names."""


def check_answers(messages: Iterable[Said], call: str) -> None:
    """``InvalidRequest`` for the first tool result that names no ``call`` of the turn before
    its own (``call`` is the dialect's word for one: ``tool_use`` block, tool call)."""
    turn, called, before = "", set[str](), frozenset[str]()
    for said in messages:
        if said.turn != turn:
            turn, called, before = said.turn, set(), frozenset(called)
        called |= said.calls
        for where, call_id in said.answers:
            if not isinstance(call_id, str) or call_id not in before:
                shown = repr(call_id)[:80] if isinstance(call_id, str) else "a non-string id"
                raise InvalidRequest(
                    f"Invalid value for '{where}': {shown} names no {call} of the "
                    "assistant turn just before it; each tool result must answer one.",
                    param=where)
