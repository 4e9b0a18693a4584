"""The dashboard end to end in a real headless Chromium, driven over the DevTools protocol.

Logs in through the form like a person (type the key, press Enter), opens every page, checks the
figures against the ledger's rows, checks that nothing is fetched from elsewhere and that the
pages fit a laptop screen, and saves a screenshot of each page in ``screenshots/`` (git-ignored).
A second walk does the same with JavaScript switched off; a third opens the routing page over a
history written to the ledger and the signal store.

Needs Chromium: ``deploy/install_browser.sh`` installs Debian's package when run as root (``make
test`` calls it); elsewhere set ``CHROMIUM=/path/to/chrome``. Without one the tests skip, or
fail under ``make test`` and CI (tests/services.py).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.observability.dashboard import format as fmt
from gateway.observability.dashboard.queries import WINDOWS
from tests.cdp import Browser, Page
from tests.observability_fixtures import (
    expected,
    load_scenario,
    observability_app,
    page_metrics,
    scripted_refusals,
    shown_percentile,
)
from tests.routing_dashboard_fixtures import routing_dashboard_app, write_routing_history
from tests.services import missing
from tests.tenant_fixtures import ADMIN_KEY

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "screenshots"
NOW = time.time()
CHROMIUM = next((found for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser",
                                    "google-chrome") if name and (found := shutil.which(name))),
                None)


@pytest.fixture(autouse=True)
def chromium() -> str:
    """The browser every test here drives; a failure under make test or CI, where it is
    installed, rather than a silent skip."""
    if CHROMIUM is None:
        missing("no Chromium found: run deploy/install_browser.sh as root (apt) or set CHROMIUM")
    return CHROMIUM


async def _server(aiohttp_server: Any, tmp_path: Path) -> tuple[str, list[Any]]:
    app = observability_app(tmp_path, now=NOW)
    server: TestServer = await aiohttp_server(app)
    records = await load_scenario(app, NOW)
    return str(server.make_url("")).rstrip("/"), records


async def _where(page: Page) -> str:
    return str(await page.evaluate("location.pathname + location.search"))


async def _fits_a_laptop(page: Page) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the window"


async def test_the_dashboard_in_a_real_browser(aiohttp_server: Any, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    base, records = await _server(aiohttp_server, tmp_path)
    async with Browser.launch(CHROMIUM) as browser:
        page = await browser.new_page(width=1440, height=900)
        await page.goto(f"{base}/dashboard/providers")
        assert await _where(page) == "/dashboard/login?next=/dashboard/providers"
        await page.screenshot(SHOTS / "dashboard-login.png")
        await page.type_and_enter("#key", ADMIN_KEY)

        assert await _where(page) == "/dashboard/providers"
        shown = page_metrics(await page.html())
        assert shown == {"healthy": "3", "probing": "1", "open": "1"}
        await page.screenshot(SHOTS / "dashboard-providers.png")

        await page.goto(f"{base}/dashboard")
        hour = expected(records, NOW - 3600, NOW)
        shown = page_metrics(await page.html())
        assert shown["requests"] == fmt.num(hour.requests)
        assert shown["latency-p50"] == fmt.ms(hour.p50)
        assert shown["spend-month"] == fmt.usd(hour.cost_month)
        assert await page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
        assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == (
            "rgb(245, 246, 248)")  # the stylesheet was served and applied
        assert await page.evaluate("!document.querySelector('.refresh').hidden")  # JS is on
        await _fits_a_laptop(page)
        await page.screenshot(SHOTS / "dashboard-overview.png")

        refusals = scripted_refusals(NOW)
        for key in ("24h", "7d"):  # read from the hourly roll-ups and the raw edges
            await page.goto(f"{base}/dashboard?window={key}")
            since = NOW - WINDOWS[key].seconds
            want = expected(records, since, NOW)
            shown = page_metrics(await page.html())
            assert shown["requests"] == fmt.num(want.requests)
            assert shown["latency-p50"] == shown_percentile(want.p50, since, NOW)
            assert shown["latency-p50"].startswith("≈ ")
            assert shown["refused"] == fmt.num(sum(1 for r in refusals if r.ts >= since))
            await _fits_a_laptop(page)
            await page.screenshot(SHOTS / f"dashboard-overview-{key}.png")

        for name, path in (("tenants", "/dashboard/tenants?tenant=acme"),
                           ("requests", "/dashboard/requests?limit=50")):
            await page.goto(base + path)
            assert await _where(page) == path
            await _fits_a_laptop(page)
            await page.screenshot(SHOTS / f"dashboard-{name}.png")
        shown = page_metrics(await page.html())
        assert shown["rows"] == "50"
        assert shown["refusal-rows"] == str(len(refusals))
        newest = await page.evaluate(
            "document.querySelector('table.refusals tbody tr').dataset.refusalId")
        assert newest == refusals[-1].request_id

        assert all(url.startswith((base, "data:")) for url in page.requested), page.requested
        await page.click(".tools button")
        assert (await _where(page)).startswith("/dashboard/login")


async def test_the_dashboard_works_with_javascript_off(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    base, records = await _server(aiohttp_server, tmp_path)
    async with Browser.launch(CHROMIUM) as browser:
        page = await browser.new_page(width=1280, height=800)
        await page.send("Emulation.setScriptExecutionDisabled", {"value": True})
        await page.goto(f"{base}/dashboard?window=24h")
        await page.type_and_enter("#key", ADMIN_KEY)
        html = await page.html()
        day = expected(records, NOW - 86_400, NOW)
        shown = page_metrics(html)
        assert shown["requests"] == fmt.num(day.requests)
        assert shown["error-rate"] == fmt.pct(day.errors / day.requests)
        assert '<label class="refresh" hidden="">' in html  # no dead control without JS
        await page.goto(f"{base}/dashboard/requests?status=error&window=7d")
        errors = [r for r in records if r.status >= 400 and r.ts >= NOW - 7 * 86_400]
        assert page_metrics(await page.html())["rows"] == str(len(errors))
        await page.screenshot(SHOTS / "dashboard-requests-errors-nojs.png")


async def test_the_routing_page_in_a_real_browser(aiohttp_server: Any, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    app = routing_dashboard_app(tmp_path)
    server: TestServer = await aiohttp_server(app)
    history = await write_routing_history(app)
    base = str(server.make_url("")).rstrip("/")
    async with Browser.launch(CHROMIUM) as browser:
        page = await browser.new_page(width=1440, height=900)
        await page.goto(f"{base}/dashboard/routing")
        await page.type_and_enter("#key", ADMIN_KEY)
        assert await _where(page) == "/dashboard/routing"
        html = await page.html()
        shown = page_metrics(html)
        assert shown["routed"] == fmt.num(history.routed)
        assert shown["feedback-bad"] == fmt.num(history.bad)
        assert f'data-override="{history.overridden_route}:cheap:reasoning"' in html
        assert await page.evaluate(
            "document.querySelectorAll('.chart-card svg').length") == 3  # the charts drew
        assert await page.evaluate(
            "document.querySelector('nav.tabs [aria-current=page]').textContent") == "Routing"
        await _fits_a_laptop(page)
        await page.screenshot(SHOTS / "dashboard-routing.png")
        assert all(url.startswith((base, "data:")) for url in page.requested), page.requested
