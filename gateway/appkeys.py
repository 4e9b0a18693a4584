"""Every piece of state the application holds, under one typed key each.

Packages that own their own state (tenants, cache, routing, the embedder pool) declare their
keys here too, so this file is the one list of what lives on the app.
"""

from __future__ import annotations

from aiohttp import web

from gateway.catalog import Catalog
from gateway.config import Settings
from gateway.failover import Failover
from gateway.http_client import HttpClient
from gateway.lifecycle import Lifecycle
from gateway.upstream import Upstream

SETTINGS = web.AppKey("settings", Settings)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
CATALOG = web.AppKey("catalog", Catalog)
CLIENT_SESSION = web.AppKey("client_session", HttpClient)
UPSTREAM = web.AppKey("upstream", Upstream)
FAILOVER = web.AppKey("failover", Failover)
