"""Which text of a conversation is embedded to route it.

The last user turn decides. A short follow-up ("and in French?", "why?") says little on its own,
so earlier user turns are put before it, up to ``context_turns`` of them, while the text is still
short (under ``FOLLOW_UP_WORDS``). System prompts, assistant answers and tool results are left
out: they are the same for many requests or written by a model, and would drown the question.

The embedding model reads at most 256 word pieces, and the start of a long prompt is not always
where its request is ("...<3 pages of logs>... why does this crash?"). A text over
``max_tokens`` (counted as words and punctuation marks, a little under the word pieces the model
sees) keeps its first two thirds and its last third of that budget, joined by an ellipsis.
Pure functions; touches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.core.chat import Message

FOLLOW_UP_WORDS = 12
MAX_TOKENS = 160
_TOKEN = re.compile(r"\w+|[^\w\s]")
_ELLIPSIS = " … "


def _user_texts(messages: Sequence[Message]) -> list[str]:
    return [t for m in messages if m.role == "user" and (t := m.text.strip())]


def _word_count(text: str) -> int:
    return len(text.split())


def head_and_tail(text: str, max_tokens: int = MAX_TOKENS) -> str:
    """``text`` cut to about ``max_tokens`` tokens: two thirds from its start, a third from
    its end (whole tokens, original spacing kept)."""
    spans = [m.span() for m in _TOKEN.finditer(text)]
    if len(spans) <= max_tokens:
        return text
    head = max(1, (2 * max_tokens) // 3)
    tail = max(1, max_tokens - head)
    return text[: spans[head - 1][1]].rstrip() + _ELLIPSIS + text[spans[-tail][0] :].lstrip()


def routing_text(
    messages: Sequence[Message], *, context_turns: int = 2, max_tokens: int = MAX_TOKENS
) -> str:
    """The text to embed for routing ``messages`` (empty when no message has text)."""
    users = _user_texts(messages)
    if not users:
        fallback = [t for m in messages if (t := m.text.strip())]
        return head_and_tail(fallback[-1], max_tokens) if fallback else ""
    parts = [users[-1]]
    for earlier in reversed(users[-1 - context_turns : -1]):
        if sum(_word_count(p) for p in parts) >= FOLLOW_UP_WORDS:
            break
        parts.insert(0, earlier)
    if len(parts) == 1:
        return head_and_tail(parts[0], max_tokens)
    # Context first, the question last: the tail of the budget always keeps the question.
    return head_and_tail("\n".join(parts), max_tokens)
