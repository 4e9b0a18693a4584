"""One adapter instance per configured provider, chosen by the provider's wire format."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.config import ProviderSettings
from gateway.upstream.calls import Upstream
from gateway.upstream.providers.base import Provider
from gateway.upstream.providers.demo import DemoProvider
from gateway.upstream.providers.openai import OpenAIProvider


def build_providers(
    providers: Sequence[ProviderSettings], upstream: Upstream
) -> dict[str, Provider]:
    built: dict[str, Provider] = {}
    for p in providers:
        built[p.name] = _adapter(p.kind, upstream)
    return built


def _adapter(kind: str, upstream: Upstream) -> Provider:
    if kind == "demo":
        return DemoProvider()
    if kind == "gemini":
        from gateway.upstream.providers.gemini import GeminiProvider

        return GeminiProvider(upstream)
    if kind == "anthropic":
        from gateway.upstream.providers.anthropic import AnthropicProvider

        return AnthropicProvider(upstream)
    return OpenAIProvider(upstream)
