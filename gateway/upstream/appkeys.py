"""The upstream state on the app, under one typed key each: the model catalog, the pooled HTTP
client, the provider calls and failover's health. Imports only ``upstream`` and ``core``.
"""

from __future__ import annotations

from aiohttp import web

from gateway.upstream.calls import Upstream
from gateway.upstream.catalog import Catalog
from gateway.upstream.failover import Failover
from gateway.upstream.http_client import HttpClient

CATALOG = web.AppKey("catalog", Catalog)
CLIENT_SESSION = web.AppKey("client_session", HttpClient)
UPSTREAM = web.AppKey("upstream", Upstream)
FAILOVER = web.AppKey("failover", Failover)
