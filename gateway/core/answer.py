"""The typed answer every layer shares: ``Usage``, ``Deployment``, ``Completion``, ``Attempt``,
``Json`` and the helpers that build and read OpenAI's ``chat.completion`` objects and chunks.

It sits in ``core`` so that the cache, the router and the tenants name an answer without
importing any provider; it imports only ``core``. An adapter (``upstream/providers``) translates
one ``ChatRequest`` into its provider's wire format and the answer back into OpenAI's: a
``Completion`` (the ``chat.completion`` object) or a stream of ``chat.completion.chunk`` objects.
It raises ``UpstreamFailure`` for any failed attempt, before or during a stream; it never decides
about failover, which is ``gateway.upstream.failover``'s job.

Adapters always ask their provider for usage (streams included) so the gateway can account for
cost; whether the client sees a usage chunk is decided by the gateway, not the adapter.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.core import json_depth
from gateway.core.config import ModelSettings, ProviderSettings
from gateway.core.errors import FailureKind, UpstreamFailure

Json = dict[str, Any]

_LIFETIMES = "cache_creation_token_details"
"""Where OpenAI's usage shape tells cache writes apart by lifetime, in ``prompt_tokens_details``
(LiteLLM's name): ``ephemeral_5m_input_tokens`` and ``ephemeral_1h_input_tokens``, Anthropic's
own names, written only when some were 1-hour writes."""


@dataclass(frozen=True, slots=True)
class Usage:
    """A call's tokens. The prompt's are of three classes, each priced once: read from the
    provider's cache (``cached_tokens``), written to it (``cache_write_tokens``, which
    Anthropic bills above the input price, the more so for a 1-hour write than for a 5-minute
    one: ``cache_write_1h_tokens``) and the rest, fresh."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    estimated: bool = False
    reasoning_tokens: int = 0  # part of completion_tokens: thinking the client does not see
    cache_write_tokens: int = 0  # part of prompt_tokens, never of cached_tokens
    cache_write_1h_tokens: int = 0  # part of cache_write_tokens; the rest are 5-minute writes

    def plus(self, other: Usage | None) -> Usage:
        """Both usages together (an escalated request pays for every answer it got)."""
        if other is None:
            return self
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens,
                     self.cached_tokens + other.cached_tokens,
                     self.estimated or other.estimated,
                     self.reasoning_tokens + other.reasoning_tokens,
                     self.cache_write_tokens + other.cache_write_tokens,
                     self.cache_write_1h_tokens + other.cache_write_1h_tokens)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> Json:
        usage: Json = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens or self.cache_write_tokens:
            details = usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
            if self.cache_write_tokens:  # OpenRouter's name for them
                details["cache_write_tokens"] = self.cache_write_tokens
            if hour := self.cache_write_1h_tokens:
                details[_LIFETIMES] = {"ephemeral_5m_input_tokens": self.cache_write_tokens - hour,
                                       "ephemeral_1h_input_tokens": hour}
        if self.reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage


@dataclass(frozen=True, slots=True)
class Deployment:
    """One public model name served by one provider's upstream model."""

    model: ModelSettings
    provider: ProviderSettings

    @property
    def id(self) -> str:
        return self.model.deployment_id

    @property
    def tier(self) -> str:
        return self.model.tier

    def cost(self, usage: Usage) -> float:
        """The price of ``usage`` in the configured currency (prices are per million tokens)."""
        m = self.model
        fresh = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
        written_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
        return (
            fresh * m.input_price_per_mtok
            + usage.cached_tokens * m.cached_input_price_per_mtok
            + written_5m * m.cache_write_price_per_mtok
            + usage.cache_write_1h_tokens * m.cache_write_1h_price_per_mtok
            + usage.completion_tokens * m.output_price_per_mtok
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer in OpenAI's ``chat.completion`` shape, with its usage parsed."""

    body: Json
    usage: Usage | None
    native: Json | None = None
    """The provider's own answer, when it speaks the client's dialect (``ChatRequest.native``)."""


NATIVE_EVENTS = "x_gateway_native_events"
"""The key under which a stream chunk carries the provider's own events, in native mode."""
USAGE_SO_FAR = "x_gateway_usage_so_far"
"""The key under which a stream chunk carries the usage a provider told before its end
(Anthropic's ``message_start``: the prompt's tokens, cache reads included; Gemini's running
``usageMetadata`` on every event), as a ``Usage``: what a stream cut before its final usage
is charged for its prompt, and at least for its output. Taken out of the chunk where it is read
(``gateway.pipeline.streaming``): never sent to a client."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one deployment; ``failure`` is None for the one that answered."""

    deployment: Deployment
    failure: UpstreamFailure | None


def as_str(value: Any, default: str = "") -> str:
    """A string field of an upstream answer, which is untrusted JSON: ``default`` unless a str."""
    return value if isinstance(value, str) else default


def as_obj(value: Any) -> Json:
    """An object field of an upstream answer: ``{}`` unless a JSON object."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """An array field of an upstream answer: ``[]`` unless a JSON array."""
    return value if isinstance(value, list) else []


def as_index(value: Any, default: int = 0) -> int:
    """An index field of an upstream answer: ``default`` unless a non-negative integer."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else default


_MAX_TOKENS = 1 << 40  # far beyond any answer; keeps a provider's nonsense out of the ledger


def token_count(value: Any) -> int | None:
    """A token count as a provider reports it: an integer from 0 to ``_MAX_TOKENS``; else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        return None
    return value


def usage_from_openai(value: Any) -> Usage | None:
    """Parse OpenAI's ``usage`` object; None when absent or malformed."""
    if not isinstance(value, dict):
        return None
    prompt = token_count(value.get("prompt_tokens"))
    completion = token_count(value.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    hour = _detail(as_obj(value.get("prompt_tokens_details")), _LIFETIMES,
                   "ephemeral_1h_input_tokens")
    return reported_usage(prompt, completion,
                          cached=_detail(value, "prompt_tokens_details", "cached_tokens"),
                          reasoning=_detail(value, "completion_tokens_details", "reasoning_tokens"),
                          written=_detail(value, "prompt_tokens_details", "cache_write_tokens"),
                          written_1h=hour)


def reported_usage(prompt: int, completion: int, *, cached: int, reasoning: int,
                   written: int = 0, written_1h: int = 0) -> Usage:
    """A provider's counts as ``Usage``, a part never larger than its whole: more cached (or
    written) tokens than prompt tokens would price the fresh prompt below zero (a credit to
    the tenant). Cache reads come first; writes get what is left, and 1-hour writes are some
    of the writes."""
    cached = min(cached, prompt)
    written = min(written, prompt - cached)
    return Usage(prompt, completion, cached, reasoning_tokens=min(reasoning, completion),
                 cache_write_tokens=written, cache_write_1h_tokens=min(written_1h, written))


def _detail(usage: Json, table: str, name: str) -> int:
    details = usage.get(table)
    return (token_count(details.get(name)) or 0) if isinstance(details, dict) else 0


def event_json(data: bytes) -> Any:
    """One stream event's JSON; a ``BAD_RESPONSE`` failure when it is not JSON."""
    try:
        return json_depth.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamFailure(FailureKind.BAD_RESPONSE, "stream event is not JSON") from exc


def completion_id(prefix: str = "chatcmpl") -> str:
    """A fresh id in OpenAI's style, for answers a translating adapter assembles itself."""
    return f"{prefix}-{secrets.token_hex(12)}"


def now_s() -> int:
    return int(time.time())


def assistant_message(content: str | None, tool_calls: list[Json]) -> Json:
    """The ``message`` of a choice a translating adapter assembles."""
    message: Json = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def completion(model: str, choices: list[Json], usage: Usage | None) -> Completion:
    """A ``chat.completion`` assembled by a translating adapter, ``usage`` included when known."""
    body: Json = {
        "id": completion_id(),
        "object": "chat.completion",
        "created": now_s(),
        "model": model,
        "choices": choices,
        "system_fingerprint": None,
    }
    if usage is not None:
        body["usage"] = usage.as_openai()
    return Completion(body, usage)


def chunk(
    chunk_id: str, model: str, created: int, delta: Json, finish_reason: str | None = None,
    index: int = 0,
) -> Json:
    """One ``chat.completion.chunk`` with a single choice, as translating adapters emit them."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": None,
                     "finish_reason": finish_reason}],
    }


def usage_chunk(chunk_id: str, model: str, created: int, usage: Usage) -> Json:
    """The final usage-only chunk (``choices`` empty), as OpenAI sends it."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage.as_openai(),
    }
