"""Prompt token estimates for admission, with a real tokenizer when one is on disk.

The estimate only sizes a reservation that is settled to the provider's real usage afterwards, so
any reasonable tokenizer will do: the embedding model's ``tokenizer.json`` (already shipped for the
embedder) when present, else about four characters per token. Very long prompts are tokenized up
to ``MAX_EXACT_CHARS`` and extrapolated, so one request costs the event loop a bounded time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
from tokenizers import Tokenizer

from gateway.chat import ChatRequest

log = logging.getLogger(__name__)

MAX_EXACT_CHARS = 32_000
TOKENS_PER_MESSAGE = 4  # role and separators, as chat formats add them
TOKENS_PER_REQUEST = 3


class TokenCounter:
    """Counts tokens of text; ``tokenizer`` None means the chars/4 estimate."""

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, path: Path | None) -> TokenCounter:
        """Read ``tokenizer.json`` (disk only, no network); fall back to chars/4 when absent."""
        if path is None or not path.is_file():
            log.info("no tokenizer at %s: prompt tokens are estimated as chars/4", path)
            return cls(None)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # a corrupt file must not stop the gateway
            log.warning("cannot load tokenizer %s (%s): using chars/4", path, exc)
            return cls(None)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return cls(tokenizer)

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._tokenizer is None:
            return (len(text) + 3) // 4
        head = text[:MAX_EXACT_CHARS]
        tokens = len(self._tokenizer.encode(head, add_special_tokens=False).ids)
        if len(text) > len(head):
            tokens = round(tokens * len(text) / len(head))
        return tokens

    def prompt_tokens(self, request: ChatRequest) -> int:
        """An estimate of the prompt's tokens: message texts, tool calls and tool schemas."""
        parts = [m.text for m in request.messages]
        parts.extend(orjson.dumps(c).decode() for m in request.messages for c in m.tool_calls)
        parts.extend(orjson.dumps(t).decode() for t in request.tools)
        overhead = TOKENS_PER_REQUEST + TOKENS_PER_MESSAGE * len(request.messages)
        return overhead + self.count("\n".join(parts))
