"""The demo provider: in-process, no network, deterministic, and labelled as a demo.

It lets a fresh checkout show the whole path of a request (routing, cache, accounting, failover)
with no provider key. Its answers say plainly that they come from the demo; streams arrive word
by word, paced by the provider's ``word_delay_ms``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator

from gateway.core.answer import (
    Completion,
    Deployment,
    Json,
    Usage,
    chunk,
    completion_id,
    now_s,
    usage_chunk,
)
from gateway.core.chat import ChatRequest

_MAX_ECHO_WORDS = 24


def demo_answer(request: ChatRequest, deployment: Deployment) -> str:
    """The demo's answer: the same request always gets the same words."""
    last = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
    words = last.split()
    echo = " ".join(words[:_MAX_ECHO_WORDS]) + (" …" if len(words) > _MAX_ECHO_WORDS else "")
    digest = hashlib.sha256(last.encode()).hexdigest()[:8]
    head = (f"[demo answer from {deployment.model.name} ({deployment.tier} tier)] "
            f"This is a canned reply from the gateway's built-in demo provider; no model was "
            f"called. You asked: \"{echo}\" (fingerprint {digest}).")
    if deployment.provider.fallback:  # a fallback serves only when no real provider is enabled
        return (f"{head} No real provider is configured: set GROQ_API_KEY, OPENAI_API_KEY, "
                f"GEMINI_API_KEY or ANTHROPIC_API_KEY to get real answers.")
    return f"{head} This gateway's configuration routes model {deployment.model.name} to it."


def _usage(request: ChatRequest, text: str) -> Usage:
    """Words as tokens; every one of the ``n`` choices is counted, as a provider bills them."""
    prompt = sum(len(m.text.split()) + 4 for m in request.messages)
    return Usage(prompt_tokens=prompt, completion_tokens=len(text.split()) * request.n,
                 estimated=False)


def _truncate(request: ChatRequest, text: str) -> tuple[str, str]:
    if request.max_tokens is not None and len(text.split()) > request.max_tokens:
        return " ".join(text.split()[: request.max_tokens]), "length"
    return text, "stop"


class DemoProvider:
    async def complete(self, request: ChatRequest, deployment: Deployment) -> Completion:
        text, finish = _truncate(request, demo_answer(request, deployment))
        usage = _usage(request, text)
        body: Json = {
            "id": completion_id(),
            "object": "chat.completion",
            "created": now_s(),
            "model": deployment.model.upstream_model,
            "system_fingerprint": "demo",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for i in range(request.n)
            ],
            "usage": usage.as_openai(),
        }
        return Completion(body, usage)

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncGenerator[Json, None]:
        text, finish = _truncate(request, demo_answer(request, deployment))
        cid, created, model = completion_id(), now_s(), deployment.model.upstream_model
        delay_s = deployment.provider.word_delay_ms / 1000
        choices = range(request.n)  # every choice streams, interleaved word by word
        for c in choices:
            yield chunk(cid, model, created, {"role": "assistant", "content": ""}, index=c)
        for i, word in enumerate(text.split(" ")):
            if delay_s:
                await asyncio.sleep(delay_s)
            for c in choices:
                yield chunk(cid, model, created, {"content": word if i == 0 else " " + word},
                            index=c)
        for c in choices:
            yield chunk(cid, model, created, {}, finish, index=c)
        yield usage_chunk(cid, model, created, _usage(request, text))
