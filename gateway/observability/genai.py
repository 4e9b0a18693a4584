"""The GenAI semantic conventions' vocabulary, as the gateway fills it in. Pure; touches nothing.

``genai_provider_name`` names a configured provider as the conventions do (``gcp.gemini``,
``anthropic``, ``groq``...); ``request_attributes`` turns a finished chat request's ledger row
into its span's attributes: the conventions' ``gen_ai.*`` and the gateway's own ``gateway.*``
(route, tier, deployment, cache outcome, escalation, tenant, attempts, cost).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.core.config import ProviderSettings
from gateway.tenants.ledger import UsageRecord

AttributeValue = str | bool | int | float | Sequence[str]
Attributes = Mapping[str, AttributeValue]

# The names OpenTelemetry's GenAI conventions give the providers the gateway speaks to; an
# OpenAI-compatible provider is known by its configured name when that is one of them.
_GENAI_PROVIDERS = {"openai": "openai", "gemini": "gcp.gemini", "anthropic": "anthropic",
                    "demo": "demo"}
_KNOWN_COMPATIBLE = frozenset({"groq", "deepseek", "mistral_ai", "x_ai", "perplexity",
                               "azure.ai.openai", "openai"})


def genai_provider_name(provider: ProviderSettings) -> str:
    """``gen_ai.provider.name`` for a configured provider."""
    if provider.kind == "openai" and provider.name in _KNOWN_COMPATIBLE:
        return provider.name
    return _GENAI_PROVIDERS.get(provider.kind, provider.kind)


def request_attributes(row: UsageRecord, *, provider: ProviderSettings | None,
                       response_model: str | None, escalation: str | None,
                       error: str | None) -> dict[str, AttributeValue]:
    """A chat request's span attributes: the GenAI conventions' and the gateway's own."""
    out: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": row.model,
        "gen_ai.usage.input_tokens": row.tokens_in,
        "gen_ai.usage.output_tokens": row.tokens_out,
        "gateway.request_id": row.request_id,
        "gateway.tenant": row.tenant,
        "gateway.status": row.status,
        "gateway.attempts": row.attempts,
        "gateway.escalations": row.escalations,
        "gateway.cost": row.cost,
    }
    optional = {
        "gen_ai.provider.name": genai_provider_name(provider) if provider else None,
        "gen_ai.response.model": response_model,
        "gateway.route": row.route,
        "gateway.tier": row.tier,
        "gateway.deployment": row.deployment,
        "gateway.cache": row.cache,
        "gateway.escalation": escalation,
        "error.type": error or (str(row.status) if row.status >= 500 else None),
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out
