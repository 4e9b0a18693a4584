"""The cache's place on the app: its typed keys and its cleanup context.

``cache_context(app)`` opens the cache (database, in-memory table, graphs loaded or rebuilt),
starts its writer task, and puts it under ``CACHE``; on exit it stops the writer, writes what is
queued, saves the graphs and closes the database. Settings come from ``CACHE_SETTINGS`` (set by
``create_app`` from the parsed ``[cache]`` table), or the defaults in ``server.data_dir``. The
vector space (model and dimension) is read from the embedder's model directory once; without an
embedder the cache serves exact hits only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from embedder_worker.model import ModelConfig
from embedder_worker.settings import EmbedderSettings
from gateway.cache.index import VectorSpace
from gateway.cache.semantic_cache import SemanticCache
from gateway.core.appkeys import SETTINGS
from gateway.core.cache_settings import CacheSettings, parse_cache
from gateway.core.toml_table import Table

log = logging.getLogger(__name__)

CACHE = web.AppKey("cache", SemanticCache)
CACHE_SETTINGS = web.AppKey("cache_settings", CacheSettings)


def vector_space(embedder: EmbedderSettings | None) -> VectorSpace | None:
    """Which vectors the embedder makes: model, the settings that change them, and dimension."""
    if embedder is None:
        return None
    try:
        config = ModelConfig.load(embedder.model_dir)
    except (OSError, ValueError) as exc:
        log.warning("cache: cannot read the embedding model's settings (%s); exact hits only", exc)
        return None
    if config.dim is None:
        log.warning("cache: %s does not state its dimension; exact hits only", config.name)
        return None
    variant = "|".join((
        config.name,
        embedder.pooling or config.pooling,
        f"norm={config.normalize if embedder.normalize is None else embedder.normalize}",
        f"len={embedder.max_length or config.max_length}",
        f"prefix={embedder.query_prefix or config.query_prefix!r}",
        "int8" if embedder.quantize else "fp32",
    ))
    return VectorSpace(variant, config.dim)


async def cache_context(app: web.Application) -> AsyncIterator[None]:
    settings = app.get(CACHE_SETTINGS) or parse_cache(Table({}), app[SETTINGS].server.data_dir)
    space = vector_space(app[SETTINGS].embedder)
    cache = await SemanticCache.open(settings, space)
    app[CACHE] = cache
    cache.start()
    try:
        yield
    finally:
        await cache.close()
