"""The application's own state, under one typed key each: its settings and its lifecycle.

Each capability declares the keys of the state it owns beside it (``upstream/appkeys.py``,
``tenants/context.py``, ``cache/context.py``, ``routing/context.py``); imports only ``core``.
"""

from __future__ import annotations

from aiohttp import web

from gateway.core.config import Settings
from gateway.core.lifecycle import Lifecycle

SETTINGS = web.AppKey("settings", Settings)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
