"""Wiring: the routing cleanup context, the app keys it fills, and the prompt's embedding.

``configure(app, config)`` puts a ``RoutingConfig`` on the app and registers ``routing_context``,
which resolves the tiers, loads and validates the routes file (a bad file, an unknown tier or an
empty route fails start-up with a message naming the place), and opens the signal store
(``SIGNALS``) with its writer task and the feed that turns answers, retries and feedback into
outcomes (``OUTCOMES``). The trained router is built in the background, so start-up
never waits for the model: until it is in, ``ROUTER`` (a ``RouterSlot``) sends every routed
request to the default tier. Building it gets the utterance vectors (from the on-disk cache;
what is missing through the embedder pool once a worker is live, or with the model in this
process when none comes up), and trains or loads the head. On exit
the store writes what is queued and closes. Register it after the embedder pool's context.

``embed_prompt(app, text)`` is the request path's one embedding: the pool's vector, or None
when no worker answers (routing then falls back to the default tier; it never fails).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from embedder_worker.client import EmbedderError, EmbedderPool
from embedder_worker.settings import EmbedderSettings
from gateway.core.chat import ChatRequest
from gateway.core.lifecycle import stop_task
from gateway.core.postgres import DATABASE
from gateway.core.routing_settings import RoutingSettings, TierPlan, tier_plan
from gateway.observability.metrics import METRICS_KEY
from gateway.routing.classifier import FloatArray
from gateway.routing.learned.context import LEARNER, configure_learning
from gateway.routing.learned.learner import Learner
from gateway.routing.learned.policy import LearnedPolicy
from gateway.routing.outcomes import OutcomeFeed
from gateway.routing.pg_signals import PgSignalSink
from gateway.routing.policy import Decision
from gateway.routing.prompt import routing_text
from gateway.routing.router import Router, build_router, embed_routes
from gateway.routing.routes import RouteSet, load_configured_routes
from gateway.routing.signals import SignalStore
from gateway.routing.vectors import InProcessEmbedder, VectorCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """What the context needs: the section, the data folder, the tiers the models define, the
    embedder settings (None: no embedder, every routed request takes the default tier) and the
    key under which the embedder pool lives on the app."""

    settings: RoutingSettings
    data_dir: Path
    tiers: tuple[str, ...]
    embedder: EmbedderSettings | None = None
    pool_key: web.AppKey[EmbedderPool] | None = None
    tier_costs: Mapping[str, float] = field(default_factory=dict)
    """Each tier's price (``learned.policy.tier_costs``): what the learned policy saves."""


ROUTING_CONFIG = web.AppKey("routing_config", RoutingConfig)
ROUTER: web.AppKey[RouterSlot] = web.AppKey("router")
SIGNALS = web.AppKey("routing_signals", SignalStore)
OUTCOMES = web.AppKey("routing_outcomes", OutcomeFeed)


def configure(app: web.Application, config: RoutingConfig) -> None:
    """Put the routing configuration on ``app`` and register the learner's context (when
    ``[routing.learning]`` is enabled it runs; it closes after the feed that fills it) and
    ``routing_context``."""
    app[ROUTING_CONFIG] = config
    configure_learning(app, config.settings.learning, config.data_dir)
    app.cleanup_ctx.append(routing_context)


def embedder_options(settings: EmbedderSettings) -> dict[str, Any]:
    """The in-process model's options that match the workers' (so vectors agree)."""
    return {
        "pooling": settings.pooling,
        "normalize": settings.normalize,
        "max_length": settings.max_length,
        "query_prefix": settings.query_prefix or None,
        "quantize": settings.quantize,
    }


def _pool(app: web.Application, config: RoutingConfig) -> EmbedderPool | None:
    return app.get(config.pool_key) if config.pool_key is not None else None


async def _vectors(app: web.Application, config: RoutingConfig, routes: RouteSet,
                   local: InProcessEmbedder) -> FloatArray:
    """Utterance vectors: cached ones, the rest from a live worker or else this process."""
    cache = VectorCache.load(config.settings.cache_path(config.data_dir) / "vectors.npz",
                             local.name)
    pool = _pool(app, config)
    if pool is not None and pool.ready:
        try:
            return await embed_routes(routes, cache, pool.embed)
        except EmbedderError as exc:
            log.warning("embedding the routes through the workers failed (%s): "
                        "embedding them in this process", exc)
    return await embed_routes(routes, cache, local.embed)


def _default_router(routes: RouteSet, plan: TierPlan, s: RoutingSettings) -> Router:
    """The router without a model: every routed request takes the default tier."""
    return build_router(routes, None, plan, model="", cache_dir=None,
                        ambiguity=s.ambiguity_policy, escalation=s.escalation)


async def load_router(app: web.Application, config: RoutingConfig, routes: RouteSet,
                      plan: TierPlan) -> Router:
    """The router for ``routes``; without a usable model, one that always takes the default
    tier (logged as an error: the gateway still serves)."""
    s = config.settings
    if config.embedder is None:
        log.warning("routing without an embedder: model 'auto' always takes tier %s",
                    plan.default)
        return _default_router(routes, plan, s)
    local = InProcessEmbedder(config.embedder.model_dir, **embedder_options(config.embedder))
    try:
        vectors = await _vectors(app, config, routes, local)
    except Exception as exc:  # any failure to load or run the model (onnxruntime has its own)
        log.error("cannot embed the routes (%s): model 'auto' takes tier %s", exc, plan.default)
        return _default_router(routes, plan, s)
    # Training a head over thousands of utterances takes seconds: not on the event loop.
    return await asyncio.to_thread(
        build_router, routes, vectors, plan, model=local.name,
        cache_dir=s.cache_path(config.data_dir), ambiguity=s.ambiguity_policy,
        escalation=s.escalation,
    )


class RouterSlot:
    """The router in use: at start-up one that sends everything to the default tier, then the
    trained one as soon as the utterance vectors are in (``loaded``). Start-up never waits for
    the embedder; ``/readyz`` does. With a learner, each router installed decides through a
    ``LearnedPolicy`` with the router's own threshold policy as the prior."""

    def __init__(self, router: Router, learner: Learner | None = None,
                 config: RoutingConfig | None = None) -> None:
        self.learner = learner
        self.config = config
        self.current = self._learning(router)
        self.loaded = asyncio.Event()

    @property
    def plan(self) -> TierPlan:
        return self.current.plan

    def route(self, vector: FloatArray | None, tenant: str | None = None, *,
              may_explore: bool = True) -> Decision:
        return self.current.route(vector, tenant, may_explore=may_explore)

    def install(self, router: Router) -> None:
        self.current = self._learning(router)
        self.loaded.set()

    def _learning(self, router: Router) -> Router:
        if self.learner is not None and self.config is not None and router.learned is None:
            router.learned = LearnedPolicy(router.policy, self.learner, router.plan,
                                           self.config.settings.learning,
                                           self.config.tier_costs)
        return router


async def _load(app: web.Application, config: RoutingConfig, routes: RouteSet,
                slot: RouterSlot) -> None:
    """Wait (bounded) for a live worker, then build the trained router and install it."""
    pool = _pool(app, config)
    if pool is not None and config.embedder is not None:
        try:
            async with asyncio.timeout(config.embedder.start_timeout_s):
                await pool.wait_live(1)
        except TimeoutError:
            log.warning("no embedder worker after %.0f s: embedding the routes in this process",
                        config.embedder.start_timeout_s)
    try:
        slot.install(await load_router(app, config, routes, slot.plan))
    except Exception:
        log.exception("training the router failed: model 'auto' keeps taking tier %s",
                      slot.plan.default)
        slot.install(slot.current)  # the default-tier router: degraded, but ready
        return
    log.info("routing: %d routes from %s ready (tiers %s, default %s)", len(routes.routes),
             routes.source, slot.plan.order, slot.plan.default)


async def routing_context(app: web.Application) -> AsyncIterator[None]:
    """The router (trained in the background) and the signal store (see the module docstring)."""
    config = app[ROUTING_CONFIG]
    s = config.settings
    plan = tier_plan(s, config.tiers)
    routes = load_configured_routes(s, config.tiers, plan)
    learner = app.get(LEARNER)
    slot = app[ROUTER] = RouterSlot(_default_router(routes, plan, s), learner, config)
    loading = asyncio.create_task(_load(app, config, routes, slot), name="routing-load")
    store = None
    if s.signals:
        options: dict[str, Any] = {
            "model": _model_name(config), "flush_interval_s": s.signals_flush_ms / 1000,
            "batch": s.signals_batch, "max_pending": s.signals_queue,
            "retention_s": s.signals_retention_days * 86_400,
        }
        database = app.get(DATABASE)
        store = (SignalStore(PgSignalSink(database), **options) if database is not None
                 else await SignalStore.open(s.signals_path(config.data_dir), **options))
        store.start()
        app[SIGNALS] = store
    app[OUTCOMES] = OutcomeFeed(s.outcomes, signals=store, learner=learner,
                                clock=learner.clock if learner is not None else time.time)
    try:
        yield
    finally:
        try:
            await stop_task(loading)
        finally:
            if store is not None:
                await store.close()


def _model_name(config: RoutingConfig) -> str:
    if config.embedder is None:
        return ""
    try:
        return InProcessEmbedder(config.embedder.model_dir,
                                 **embedder_options(config.embedder)).name
    except (OSError, ValueError):
        return ""


async def embed_prompt(app: web.Application, text: str) -> FloatArray | None:
    """The prompt's vector from the embedder pool; None when there is none to ask."""
    config = app.get(ROUTING_CONFIG)
    pool = _pool(app, config) if config is not None else None
    if not text or pool is None or not pool.ready:
        return None
    metrics = app[METRICS_KEY]
    started = time.perf_counter()
    try:
        vector = await pool.embed_one(text)
    except EmbedderError as exc:
        metrics.embedder_failed()
        log.info("no prompt vector (%s): routing falls back to the default tier", exc)
        return None
    metrics.embedder_call(time.perf_counter() - started)
    metrics.embedder_queue_depth(pool.queue_depth)
    return vector


async def prompt_vector(app: web.Application, chat: ChatRequest) -> tuple[str, FloatArray | None]:
    """The text routing embeds for ``chat`` and its vector (None: no embedder answered)."""
    s = app[ROUTING_CONFIG].settings
    text = routing_text(chat.messages, context_turns=s.context_turns,
                        max_tokens=s.max_prompt_tokens)
    return text, await embed_prompt(app, text)


def decide(app: web.Application, request_id: str, text: str, vector: FloatArray | None,
           tenant: str | None = None, *, may_explore: bool = True) -> Decision:
    """Route one prompt (never fails) and record the decision as a signal. ``may_explore``
    False (a tenant past its budget's soft share) keeps the learned policy from exploring."""
    decision = app[ROUTER].route(vector, tenant, may_explore=may_explore)
    store = app.get(SIGNALS)
    if store is not None:
        store.decision(request_id, decision, text, vector)
    return decision
