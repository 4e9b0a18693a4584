"""Per-request values kept on the aiohttp request under typed keys."""

from __future__ import annotations

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
