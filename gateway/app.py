"""``create_app(settings)``: the routes, the middleware, and one cleanup context per resource.

Resources are acquired in order and released in reverse: the upstream HTTP client, then the
embedder pool, then the rest. Nothing here runs at import time.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from embedder_worker.supervisor import EMBEDDER_POOL, embedder_context
from gateway.api import chat, embeddings, feedback, health, messages, models, responses, route
from gateway.api.admin import add_admin_routes
from gateway.api.cache_admin import add_cache_admin_routes
from gateway.api.connections import CONNECTION_GUARD, ConnectionGuard
from gateway.api.messages_out import error_response
from gateway.api.routes_admin import add_routes_admin_routes
from gateway.cache.context import CACHE_SETTINGS, cache_context
from gateway.core.appkeys import LIFECYCLE, SETTINGS
from gateway.core.config import Settings
from gateway.core.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from gateway.core.lifecycle import Lifecycle, State
from gateway.core.notices import notices_context
from gateway.core.postgres import POSTGRES_ERRORS, database_context
from gateway.core.redis_link import CLUSTER_SETTINGS, REDIS_LINK, redis_context
from gateway.core.requestctx import ACCOUNTED, REQUEST_ID
from gateway.observability.access_log import access_log_flusher
from gateway.observability.dashboard.site import setup_dashboard
from gateway.observability.metrics import METRICS_KEY, setup_metrics
from gateway.observability.tracing import setup_tracing
from gateway.pipeline.accounting import account_refusal
from gateway.routing import context as routing
from gateway.routing.follow import routes_follow_context
from gateway.routing.learned.policy import tier_costs
from gateway.tenants import context as tenants
from gateway.tenants.redis_counters import RedisCounterStore
from gateway.tenants.response_store import response_store_context
from gateway.upstream.appkeys import CATALOG, CLIENT_SESSION, FAILOVER, UPSTREAM
from gateway.upstream.calls import Upstream
from gateway.upstream.catalog import Catalog
from gateway.upstream.failover import Failover
from gateway.upstream.http_client import HttpClient
from gateway.upstream.providers.registry import build_providers

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_REQUEST_ID = 128
_ID_SUFFIX = secrets.token_hex(4)
"""Random per process: ids of two processes never collide."""
_ID_COUNTER = itertools.count(1)
_ID_MIX = 0x9E3779B97F4B  # odd, so multiplying by it permutes the 48-bit counter values
_ID_MASK = (1 << 48) - 1


def _request_id(request: web.Request) -> str:
    """The client's id, else a fresh one that differs from the last one in its first digits
    (a scrambled counter, then the process's suffix): unique without a system call, and
    telling apart on a page that shows only an id's start."""
    given = request.headers.get("x-request-id", "")
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return f"req_{next(_ID_COUNTER) * _ID_MIX & _ID_MASK:012x}{_ID_SUFFIX}"


def _translate_http(exc: web.HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound(f"No route for this path: {exc.reason}.")
    if exc.status == 405:
        return MethodNotAllowed("This method is not allowed on this path.")
    if exc.status == 413:
        return InvalidRequest("The request body is too large.", code="request_too_large")
    return InvalidRequest(exc.text or exc.reason)


def render_error(error: GatewayError, request_id: str, path: str = "") -> web.Response:
    """The error in OpenAI's shape, or Anthropic's on the Messages API's paths."""
    status = 413 if error.code == "request_too_large" else error.status
    body = error.body()
    if messages.is_messages_path(path):
        status, body = error_response(error)
    response = web.json_response(
        body, status=status, headers={**error.headers, "x-request-id": request_id}
    )
    if error.closes_connection:
        response.force_close()
    return response


def _refused(request: web.Request, error: GatewayError, started: float) -> web.Response:
    """Render ``error``; a 4xx on a request with no usage row yet is recorded as a refusal."""
    response = render_error(error, request[REQUEST_ID], request.path)
    if response.status < 500 and not request.get(ACCOUNTED, False):
        account_refusal(request, error, response.status, (time.perf_counter() - started) * 1000)
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id, render every error as OpenAI-style JSON, record refusals."""
    started = time.perf_counter()
    request[REQUEST_ID] = _request_id(request)
    try:
        return await handler(request)
    except ConnectionResetError:
        raise
    except Exception as exc:
        if request.writer.output_size > 0:
            # The answer has begun: a second response would be written inside its body. aiohttp
            # logs what was raised and closes the connection, the one honest end left.
            log.error("error after the answer began in %s %s (request %s): connection closed",
                      request.method, request.path, request[REQUEST_ID])
            raise
        return _failure_response(request, exc, started)


def _failure_response(request: web.Request, exc: Exception, started: float) -> web.Response:
    """What a request that raised ``exc`` before its answer began gets."""
    request_id = request[REQUEST_ID]
    if isinstance(exc, GatewayError):
        return _refused(request, exc, started)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _refused(request, _translate_http(exc), started)
    if isinstance(exc, POSTGRES_ERRORS):  # the shared database failed under an admin call
        log.warning("shared database error in %s %s (request %s): %s", request.method,
                    request.path, request_id, exc)
        return render_error(ServiceUnavailable("The shared database is unavailable; retry "
                                               "shortly."), request_id)
    log.error("unexpected error in %s %s (request %s)", request.method, request.path,
              request_id, exc_info=exc)
    return render_error(GatewayError("The gateway hit an internal error."), request_id,
                        request.path)


@web.middleware
async def in_flight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request as in flight, so shutdown knows when the last one is done."""
    with request.app[LIFECYCLE].serving():
        return await handler(request)


async def upstream_context(app: web.Application) -> AsyncIterator[None]:
    """The pooled HTTP client that every provider call shares."""
    session = HttpClient()  # timeouts are given per request
    app[CLIENT_SESSION] = session
    upstream = Upstream(session)
    app[UPSTREAM] = upstream
    settings = app[SETTINGS]
    catalog = app[CATALOG]
    app[FAILOVER] = Failover(
        catalog.deployments, build_providers(settings.providers, upstream), settings.failover
    )
    yield
    await session.close()


async def embedder_metrics_context(app: web.Application) -> AsyncIterator[None]:
    """Count embedder worker restarts in the app's metrics."""
    pool = app[EMBEDDER_POOL]
    pool.on_restart = app[METRICS_KEY].embedder_restarted
    yield
    pool.on_restart = None


async def cluster_metrics_context(app: web.Application) -> AsyncIterator[None]:
    """Report Redis going down and coming back, and admissions on local counters."""
    link, metrics = app.get(REDIS_LINK), app[METRICS_KEY]
    store = app.get(tenants.COUNTERS_KEY)
    if link is not None:
        link.on_change = metrics.redis_changed
        metrics.redis_changed(link.up)
    if isinstance(store, RedisCounterStore):
        store.on_fallback = metrics.redis_fallback
    yield
    if link is not None:
        link.on_change = None


async def lifecycle_context(app: web.Application) -> AsyncIterator[None]:
    """Ready once every other resource is up; draining as soon as shutdown begins."""
    lifecycle = app[LIFECYCLE]
    lifecycle.move(State.READY)
    yield
    lifecycle.move(State.CLOSED)


async def _on_shutdown(app: web.Application) -> None:
    """Draining, unless ``gateway serve`` began it already at SIGTERM with its deadline."""
    if app[LIFECYCLE].state is not State.DRAINING:
        log.info("gateway draining: finishing requests in flight, accepting no new ones")
        app[LIFECYCLE].drain()


def create_app(settings: Settings) -> web.Application:
    # Bodies are decoded by read_body, which answers a bad one like any bad input.
    app = web.Application(middlewares=[in_flight_middleware, errors_middleware],
                          client_max_size=0, handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    app[LIFECYCLE] = Lifecycle()
    app[CATALOG] = Catalog.from_settings(settings)
    app.cleanup_ctx.append(upstream_context)
    if settings.cluster.shared_database:  # before every backend that borrows from its pool
        # A node's supervisor migrated before starting its processes (gateway.core.processes).
        app.cleanup_ctx.append(database_context(
            settings.cluster, migrate=settings.server.process_index is None))
    app[CLUSTER_SETTINGS] = settings.cluster
    app.cleanup_ctx.append(redis_context)
    app.cleanup_ctx.append(notices_context)
    setup_tracing(app, settings.observability)  # after the upstream: it hands its tracer there
    if settings.embedder is not None:
        app.cleanup_ctx.append(embedder_context(settings.embedder))
        app.cleanup_ctx.append(embedder_metrics_context)
    app[CACHE_SETTINGS] = settings.cache
    app.cleanup_ctx.append(cache_context)
    routing.configure(app, routing.RoutingConfig(
        settings=settings.routing, data_dir=settings.server.data_dir,
        tiers=app[CATALOG].tiers, embedder=settings.embedder, pool_key=EMBEDDER_POOL,
        tier_costs=tier_costs(settings.models) if settings.routing.learning.enabled else {},
    ))
    app.cleanup_ctx.append(routes_follow_context)
    tenants.configure(app, settings)
    metrics = setup_metrics(app, settings.observability)
    app.cleanup_ctx.append(cluster_metrics_context)
    app[CONNECTION_GUARD] = ConnectionGuard(settings.server, metrics.registry)
    setup_dashboard(app, settings.observability)
    app.cleanup_ctx.append(response_store_context)
    app.cleanup_ctx.append(access_log_flusher)
    app.cleanup_ctx.append(lifecycle_context)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_post("/v1/chat/completions", chat.chat_completions)
    app.router.add_post(messages.MESSAGES_PATH, messages.create_message)
    app.router.add_post(messages.MESSAGES_PATH + "/count_tokens", messages.count_tokens)
    app.router.add_post(responses.RESPONSES_PATH, responses.create_response)
    app.router.add_get(responses.RESPONSES_PATH + "/{response_id}", responses.get_response)
    app.router.add_delete(responses.RESPONSES_PATH + "/{response_id}", responses.delete_response)
    app.router.add_post("/v1/embeddings", embeddings.create_embeddings)
    app.router.add_post("/v1/route", route.route_dry_run)
    app.router.add_post("/v1/feedback", feedback.post_feedback)
    app.router.add_get("/v1/models", models.list_models)
    app.router.add_get("/v1/models/{model}", models.get_model)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    add_admin_routes(app)
    add_cache_admin_routes(app)
    add_routes_admin_routes(app)
    return app
