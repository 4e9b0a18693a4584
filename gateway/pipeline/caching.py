"""The cache stage of one chat request: plan, look up, account for a hit, store an answer.

``CacheStage.begin`` reads the request's ``Cache-Control`` and the tenant's policy; once the
router has decided, ``route`` narrows the policy to the route's (code and maths: exact only)
and fixes the context fingerprint. A hit costs nothing and records what it saved: the price of
the deployment that would have answered, for the usage the cached answer reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from gateway.cache.context import CACHE, CACHE_SETTINGS, ENTRY_TOKENS
from gateway.cache.controls import CachePlan, cache_headers, decide, parse_cache_control
from gateway.cache.fingerprint import cache_text, fingerprint
from gateway.cache.semantic_cache import Hit, SemanticCache
from gateway.core.answer import Deployment, Json, usage_from_openai
from gateway.core.cache_settings import Policy
from gateway.core.chat import ChatRequest
from gateway.observability.metrics import METRICS_KEY
from gateway.pipeline.request_record import RequestRecord
from gateway.routing.classifier import FloatArray
from gateway.routing.context import embed_prompt


@dataclass(slots=True)
class CacheStage:
    app: web.Application
    cache: SemanticCache | None
    chat: ChatRequest
    tenant: str
    plan: CachePlan
    text: str
    fingerprint: str = ""
    hit: Hit | None = None
    lookup_s: float | None = None
    key_vector: FloatArray | None = None  # the folded text's vector, when folding changed it

    @classmethod
    def begin(cls, request: web.Request, chat: ChatRequest, tenant: str) -> CacheStage:
        app = request.app
        cache = app.get(CACHE)
        settings = app[CACHE_SETTINGS]
        directives = parse_cache_control(request.headers.get("Cache-Control"))
        available = cache is not None and cache.enabled
        plan = decide(settings.policy_for(tenant), directives, available=available)
        text = cache_text(chat) if plan.policy != "off" else ""  # off: nothing is keyed
        return cls(app, cache, chat, tenant, plan, text)

    @property
    def wants_vector(self) -> bool:
        """Whether a semantic lookup or store may happen, so the prompt must be embedded."""
        return self.plan.policy == "semantic" and (self.plan.lookup or self.plan.store)

    def route(self, target: str, route_policy: Policy | None) -> None:
        """Narrow the plan to the route's policy and key entries by ``target``."""
        if self.plan.policy == "off":
            return  # nothing to key: the cache is off for this request
        settings = self.app[CACHE_SETTINGS]
        policy = settings.policy_for(self.tenant, route_policy)
        if policy != self.plan.policy:
            self.plan = CachePlan(policy, self.plan.lookup and policy != "off",
                                  self.plan.store and policy != "off")
        if self.plan.lookup or self.plan.store:
            self.fingerprint = fingerprint(self.chat, target)

    @property
    def namespace(self) -> str:
        return str(self.app[CACHE_SETTINGS].namespace_for(self.tenant))

    async def lookup(self, vector: FloatArray | None, record: RequestRecord) -> Hit | None:
        metrics = self.app[METRICS_KEY]
        if not self.plan.lookup or self.cache is None:
            record.cache = "bypass"
            metrics.cache_result("bypass")
            return None
        vector = await self._key_vector(vector)
        started = time.perf_counter()
        self.hit = await self.cache.lookup(self.namespace, self.fingerprint, self.text, vector,
                                           self.plan.policy)
        self.lookup_s = time.perf_counter() - started
        record.cache = "hit" if self.hit else "miss"
        if self.hit is None:
            metrics.cache_result("miss", self.lookup_s)
        return self.hit

    async def _key_vector(self, vector: FloatArray | None) -> FloatArray | None:
        """The semantic key's vector: when folding typos changed the text (``cache.key_text``),
        the folded text is embedded on its own and keys the semantic lookup and the store; else
        the prompt's vector. The text itself stays as sent (the exact tier's key). Once per
        request."""
        if self.key_vector is not None:
            return self.key_vector
        if self.cache is None or vector is None or self.plan.policy != "semantic":
            return vector
        folded = self.cache.key_text(self.text)
        if folded == self.text:
            return vector
        self.key_vector = await embed_prompt(self.app, folded)
        return vector if self.key_vector is None else self.key_vector

    def account_hit(self, hit: Hit, deployment: Deployment | None, record: RequestRecord) -> None:
        """Count the hit and what it saved: the answer's usage at ``deployment``'s prices."""
        usage = usage_from_openai(hit.body.get("usage"))
        if usage is not None and deployment is not None:
            record.saved_cost = deployment.cost(usage)
        self.app[METRICS_KEY].cache_result("hit", self.lookup_s, record.saved_cost)

    def headers(self) -> dict[str, str]:
        entry = ""
        if self.hit is not None and (tokens := self.app.get(ENTRY_TOKENS)) is not None:
            entry = tokens.name(self.tenant, self.hit.entry_id)
        return cache_headers(self.hit, bypassed=not self.plan.lookup, entry=entry)

    async def store(self, body: Json | None, vector: FloatArray | None) -> None:
        """Queue a finished answer (the cache refuses errors and truncated answers itself)."""
        if body is None or self.hit is not None or not self.plan.store or self.cache is None:
            return
        vector = await self._key_vector(vector)
        await self.cache.store(self.namespace, self.fingerprint, self.text, vector, body,
                               policy=self.plan.policy)
