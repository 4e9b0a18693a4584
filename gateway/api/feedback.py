"""``POST /v1/feedback``: a tenant says how good one of its answers was.

The body is ``{"request_id": str, "score": "good" | "bad" | number in [0, 1], "comment"?: str}``;
the caller is authenticated by its API key, as for chat requests. A tenant rates only its own
requests: another tenant's request id is answered exactly as an unknown one, 404, so ids leak
nothing. Feedback on an answer that came from the cache counts too. Bad input is a 400 naming
the field, and nothing is recorded. The answer echoes what was recorded: the request, the tier
whose answer was scored, the score as a number, and whether it counted (only an answer's first
score teaches the router; later ones are kept as signals). Each API key may send
``[routing.outcomes] feedback_per_minute`` of them (a token bucket taken from the tenants' own
counters, as admission does for chat requests; past it, a 429 with ``Retry-After``), so a
client cannot flood the learner with scores. Touches nothing itself: the routing outcome feed
finds the answer and records the feedback.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from gateway.api.body import read_body
from gateway.api.caller import caller
from gateway.core.chat import field_error, json_object
from gateway.core.errors import InvalidRequest, NotFound, RateLimited, ServiceUnavailable
from gateway.routing.context import OUTCOMES
from gateway.tenants.auth import Principal
from gateway.tenants.context import COUNTERS_KEY
from gateway.tenants.counters import Ask, Take

MAX_REQUEST_ID = 128
MAX_COMMENT = 2000
_FIELDS = frozenset({"request_id", "score", "comment"})
_WORDS = {"good": 1.0, "bad": 0.0}


@dataclass(frozen=True, slots=True)
class Feedback:
    request_id: str
    score: float
    """1.0 good .. 0.0 bad."""
    comment: str | None = None


def _score(value: Any) -> float:
    if isinstance(value, str) and value in _WORDS:
        return _WORDS[value]
    if isinstance(value, int | float) and not isinstance(value, bool) \
            and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise InvalidRequest(
        f"Invalid value for 'score': expected \"good\", \"bad\" or a number from 0 to 1, "
        f"got {orjson.dumps(value).decode()[:40]}.", param="score")


def parse_feedback(raw: bytes) -> Feedback:
    """The body as ``Feedback``; ``InvalidRequest`` naming the field that is wrong."""
    body = json_object(raw)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}",
                             param=unknown[0])
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_REQUEST_ID:
        raise field_error("request_id", f"a request id of 1 to {MAX_REQUEST_ID} characters",
                          request_id)
    if "score" not in body:
        raise InvalidRequest("Missing required parameter: 'score'.", param="score")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise field_error("comment", f"a string of at most {MAX_COMMENT} characters", comment)
    return Feedback(request_id, _score(body["score"]), comment)


async def _take_allowance(app: web.Application, principal: Principal, per_minute: int) -> None:
    """One of the key's ``per_minute`` feedback requests, or ``RateLimited``."""
    counters = app.get(COUNTERS_KEY)
    if counters is None or per_minute == 0:
        return
    # Only a take: no budget, no concurrency slot, so nothing is held and nothing settles.
    ask = Ask(f"feedback-{principal.key_id}", principal.tenant, (), 1.0, (),
              (Take(f"fb:{principal.key_id}", 1, per_minute),), time.monotonic())
    verdict = await counters.admit(ask)
    if not verdict.granted:
        raise RateLimited(f"Too much feedback from this API key: at most {per_minute} a "
                          f"minute.", retry_after_s=verdict.take.retry_after_s)


async def post_feedback(request: web.Request) -> web.Response:
    principal = caller(request)
    outcomes = request.app.get(OUTCOMES)
    if outcomes is None:
        raise ServiceUnavailable("Feedback is not being collected: routing is not running.")
    await _take_allowance(request.app, principal, outcomes.settings.feedback_per_minute)
    feedback = parse_feedback(await read_body(request))
    answered = await outcomes.find(principal.tenant, feedback.request_id)
    if answered is None:
        raise NotFound(f"No request with id {feedback.request_id!r} was answered for you.",
                       param="request_id", code="request_not_found")
    counted = await outcomes.feedback(answered, feedback.score, feedback.comment)
    body = {"object": "feedback", "request_id": feedback.request_id, "score": feedback.score,
            "tier": answered.tier, "route": answered.route, "cached": answered.cached,
            "counted": counted}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
