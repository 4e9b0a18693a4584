"""``POST /v1/route``: a routing dry run.

The body is a chat completions body (``model`` may be left out: it means ``auto``). The answer
says what the gateway would do with it, without calling any provider: the route, tier, reason,
confidence, score and margin; the shortlisted routes with their scores; the tiers an escalation
would try; and the candidate deployment ids in the order failover would try them. The
``x-gateway-route*`` headers are the ones a real request gets. An explicit model name is
reported as such, with its deployments. Records no signal.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.api.body import read_body
from gateway.api.caller import caller
from gateway.core.chat import ChatRequest, chat_request, json_object
from gateway.pipeline.dispatch import tiers_after
from gateway.routing.context import ROUTER, ROUTING_CONFIG, prompt_vector
from gateway.routing.policy import Decision
from gateway.routing.router import decision_headers
from gateway.upstream.appkeys import CATALOG, FAILOVER


def _chat(raw: bytes) -> ChatRequest:
    """The body as a chat request, ``model`` defaulting to ``auto``."""
    body = json_object(raw)
    body.setdefault("model", "auto")
    return chat_request(body)


def decision_body(decision: Decision, text: str, deployments: list[str],
                  order: tuple[str, ...]) -> dict[str, Any]:
    return {
        "object": "route.decision",
        "routed": True,
        "route": decision.route,
        "tier": decision.tier,
        "reason": decision.reason.value,
        "detail": decision.detail,
        "confidence": decision.confidence,
        "score": decision.score,
        "margin": decision.margin,
        "cache": decision.cache,
        "escalation": list(tiers_after(decision, order, escalation=True)[1:]),
        "routes": [
            {"route": r.route, "tier": r.tier, "score": r.score, "similarity": r.similarity,
             "probability": r.probability}
            for r in decision.ranked
        ],
        "deployments": deployments,
        "embedded_text": text,
    }


async def route_dry_run(request: web.Request) -> web.Response:
    caller(request)
    chat = _chat(await read_body(request))
    app = request.app
    catalog, failover = app[CATALOG], app[FAILOVER]
    if not app[ROUTING_CONFIG].settings.is_alias(chat.model):
        group = failover.order(catalog.named(chat.model))
        body = {"object": "route.decision", "routed": False, "model": chat.model,
                "deployments": [d.id for d in group]}
        return web.Response(body=orjson.dumps(body), content_type="application/json")
    text, vector = await prompt_vector(app, chat)
    router = app[ROUTER]
    decision = router.route(vector)
    deployments = [d.id for d in failover.order(catalog.tier(decision.tier))]
    return web.Response(
        body=orjson.dumps(decision_body(decision, text, deployments, router.plan.order)),
        content_type="application/json",
        headers=decision_headers(decision),
    )
