"""What happened to one request, filled in as it moves through the gateway.

The chat handler creates a ``RequestRecord`` on arrival; each stage sets what it learned (the
principal, the route and tier, the deployment that answered, the usage, the cache result);
``gateway.pipeline.accounting`` turns the finished record into a ledger row, a settlement and
metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.answer import Deployment, Usage
from gateway.core.chat import ChatRequest
from gateway.core.timing import Timing
from gateway.routing.classifier import FloatArray
from gateway.tenants.auth import Principal


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    api: str = "chat"
    """The API the client spoke: ``chat``, ``messages`` or ``responses``."""
    timing: Timing = field(default_factory=Timing)
    principal: Principal | None = None
    model: str = ""
    chat: ChatRequest | None = None
    route: str | None = None
    routed_tier: str | None = None
    """The tier the router chose (a cache hit's answer stands for that tier's)."""
    learned: bool = False
    """Whether the learned policy made the routing decision."""
    decided: tuple[tuple[str, float], ...] = ()
    """The estimate the learned policy chose the routed tier with (from ``LearnedNote.decided``,
    that tier's pair only); empty when no learned estimate chose the tier (intent routes,
    exploration, a budget downgrade)."""
    vector: FloatArray | None = None
    text_key: bytes | None = None
    """The prompt's vector and the key of the text embedded for it (``signals.prompt_key``)."""
    tier: str | None = None
    deployment: Deployment | None = None
    attempts: int = 0
    failed: list[str] = field(default_factory=list)
    """The deployment of each attempt that failed (the providers page counts them)."""
    escalations: int = 0
    escalation: str | None = None
    """The last escalation, ``from->to: reason``, for the response header."""
    failed_tiers: list[tuple[str, str]] = field(default_factory=list)
    """(tier, reason) of each answer or tier escalation moved past."""
    discarded_usage: Usage | None = None
    discarded_cost: float = 0.0
    """What answers thrown away by escalation cost: paid for all the same."""
    decision_headers: dict[str, str] = field(default_factory=dict)
    limit_headers: dict[str, str] = field(default_factory=dict)
    """OpenAI's ``x-ratelimit-*`` headers for this request's reservation."""
    budget_downgraded: bool = False
    status: int = 200
    usage: Usage | None = None
    usage_so_far: Usage | None = None
    """What the provider told of a stream's usage before its end (``USAGE_SO_FAR``)."""
    streamed_text: list[str] = field(default_factory=list)
    cache: str | None = None
    saved_cost: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False
    prompt: str | None = None
    """The last user turn, kept only when the access log is configured to show prompts."""
    error: str | None = None
    """The error code sent to the client, never its free text."""
