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
    return (
        f"[demo answer from {deployment.model.name} ({deployment.tier} tier)] "
        f"This gateway has no real provider configured, so this is a canned reply. "
        f"You asked: \"{echo}\" (fingerprint {digest}). Set GROQ_API_KEY, OPENAI_API_KEY, "
        f"GEMINI_API_KEY or ANTHROPIC_API_KEY to get real answers."
    )


def _usage(request: ChatRequest, text: str) -> Usage:
    prompt = sum(len(m.text.split()) + 4 for m in request.messages)
    return Usage(prompt_tokens=prompt, completion_tokens=len(text.split()), estimated=False)


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
        yield chunk(cid, model, created, {"role": "assistant", "content": ""})
        for i, word in enumerate(text.split(" ")):
            if delay_s:
                await asyncio.sleep(delay_s)
            yield chunk(cid, model, created, {"content": word if i == 0 else " " + word})
        yield chunk(cid, model, created, {}, finish)
        yield usage_chunk(cid, model, created, _usage(request, text))
