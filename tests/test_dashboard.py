"""Tests for the dashboard (gateway/observability/dashboard/,
gateway/observability/dashboard/queries.py, gateway/observability/dashboard/charts.py).

Pages are fetched over HTTP after a scripted mix of requests was written through the real
ledger; the figures they show are compared with the same figures computed from the rows.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.core.observability_settings import ObservabilitySettings
from gateway.observability.dashboard import format as fmt
from gateway.observability.dashboard.charts import (
    Series,
    bar_chart,
    line_chart,
    meter,
    nice_ceiling,
    share_bar,
)
from gateway.observability.dashboard.queries import WINDOWS
from gateway.observability.dashboard.session import COOKIE, Sessions, safe_next, set_session_cookie
from gateway.observability.dashboard.state import READER_KEY
from gateway.tenants.context import AUTH_KEY, LEDGER_KEY, STORE_KEY
from gateway.tenants.ledger import UsageRecord, day_of, month_start_of
from gateway.tenants.rollups import whole_hours
from tests.observability_fixtures import (
    LEAKED,
    TENANTS,
    Client,
    expected,
    load_scenario,
    login,
    nearest_rank,
    observability_app,
    page_metrics,
    scripted_refusals,
    shown_percentile,
)
from tests.tenant_fixtures import ADMIN_KEY

NOW = time.time()


@pytest.fixture
async def scenario(aiohttp_client: Any, tmp_path: Path) -> tuple[Client, list[UsageRecord]]:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    records = await load_scenario(client.app, NOW)
    assert (await login(client)).status == 303
    return client, records


async def _page(client: Client, path: str) -> str:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 200, await response.text()
    return await response.text()


# Login and sessions --------------------------------------------------------------------------


async def test_pages_send_a_visitor_without_a_session_to_the_login_form_and_back(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    for path in ("/dashboard", "/dashboard/providers", "/dashboard/tenants",
                 "/dashboard/requests?tenant=acme"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].startswith("/dashboard/login?next=/dashboard")
    form = await client.get("/dashboard/login?next=/dashboard/providers")
    assert 'value="/dashboard/providers"' in await form.text()
    answer = await client.post("/dashboard/login", allow_redirects=False,
                               data={"key": ADMIN_KEY, "next": "/dashboard/providers"})
    assert answer.status == 303 and answer.headers["Location"] == "/dashboard/providers"
    assert (await client.get("/dashboard/providers", allow_redirects=False)).status == 200


async def test_the_session_cookie_is_signed_http_only_strict_and_never_the_key(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    answer = await login(client)
    header = answer.headers["Set-Cookie"]
    assert header.startswith(f"{COOKIE}=")
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/dashboard" in header
    assert "Secure" not in header  # plain http here; https gets Secure (next test)
    assert ADMIN_KEY not in header
    assert "Max-Age=43200" in header


def test_the_session_cookie_is_secure_over_https() -> None:
    request = make_mocked_request("POST", "/dashboard/login", sslcontext=True)  # type: ignore[arg-type]
    response = web.Response()
    set_session_cookie(request, response, "token", 60)
    assert "Secure" in response.cookies[COOKIE].output()


async def test_a_wrong_key_or_a_tenant_key_gets_the_form_again_with_401(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    store, auth = client.app[STORE_KEY], client.app[AUTH_KEY]
    await store.create_tenant("acme")
    _, tenant_key = await store.create_key(auth.secret, "acme")
    await auth.reload(store)
    for key in ("wrong-key-0123456789", tenant_key, "", ADMIN_KEY + " x"):
        answer = await login(client, key)
        assert answer.status == 401
        text = await answer.text()
        assert "That is not the admin key." in text and "Set-Cookie" not in answer.headers
        assert not key or key not in text


async def test_logging_out_ends_the_session_even_for_a_copied_cookie(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    token = (await login(client)).cookies[COOKIE].value
    out = await client.post("/dashboard/logout", allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/dashboard/login"
    replayed = await client.get("/dashboard", allow_redirects=False,
                                headers={"Cookie": f"{COOKIE}={token}"})
    assert replayed.status == 303


def test_session_tokens_expire_and_reject_tampering() -> None:
    clock = [1000.0]
    sessions = Sessions(ttl_s=60, clock=lambda: clock[0])
    secret = b"s" * 32
    token = sessions.issue(secret)
    assert sessions.check(secret, token) is not None
    assert sessions.check(b"t" * 32, token) is None
    expires, nonce, mac = token.split(".")
    assert sessions.check(secret, f"{int(expires) + 3600}.{nonce}.{mac}") is None
    assert sessions.check(secret, "garbage") is None and sessions.check(secret, None) is None
    clock[0] += 61
    assert sessions.check(secret, token) is None


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/dashboard",
                                    "/admin/tenants", "/dashboard\\..\\x", None, ""])
def test_after_login_the_browser_only_goes_to_a_dashboard_page(target: str | None) -> None:
    assert safe_next(target) == "/dashboard"


async def test_the_login_form_refuses_a_large_body(aiohttp_client: Any, tmp_path: Path) -> None:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    answer = await client.post("/dashboard/login", data={"key": "x" * 10_000})
    assert answer.status == 413


# Pages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["1h", "24h", "7d"])
async def test_overview_figures_agree_with_the_ledger(
    scenario: tuple[Client, list[UsageRecord]], window: str
) -> None:
    client, records = scenario
    shown = page_metrics(await _page(client, f"/dashboard?window={window}"))
    want = expected(records, NOW - WINDOWS[window].seconds, NOW)
    assert shown["requests"] == fmt.num(want.requests)
    assert shown["error-rate"] == fmt.pct(want.errors / want.requests)
    since = NOW - WINDOWS[window].seconds
    assert shown["latency-p50"] == shown_percentile(want.p50, since, NOW)
    assert shown["ttft-p50"] == shown_percentile(want.ttft_p50, since, NOW)
    assert shown["hit-rate"] == fmt.pct(want.hits / (want.hits + want.misses))
    assert shown["escalation-rate"] == fmt.pct(want.escalated / want.requests)
    assert shown["spend-today"] == fmt.usd(want.cost_today)
    assert shown["spend-month"] == fmt.usd(want.cost_month)


async def test_overview_route_mix_counts_each_route(
    scenario: tuple[Client, list[UsageRecord]]
) -> None:
    client, records = scenario
    html = await _page(client, "/dashboard")
    hour = [r for r in records if r.ts >= NOW - 3600]
    for route in {r.route or "none" for r in hour}:
        count = sum((r.route or "none") == route for r in hour)
        row = re.search(rf'data-route="{route}">.*?<td class="num">([\d,]+)</td>', html, re.S)
        assert row is not None and row.group(1) == fmt.num(count)
    assert html.count("<svg") >= 5  # four charts and the route share bar, drawn inline


async def test_overview_models_table_shows_the_model_asked_for_and_the_one_that_answered(
    scenario: tuple[Client, list[UsageRecord]]
) -> None:
    client, records = scenario
    html = await _page(client, "/dashboard?window=7d")
    week = [r for r in records if r.ts >= NOW - 7 * 86_400]
    pairs: dict[tuple[str, str], int] = {}
    for r in week:
        key = (r.model, r.answered_model or "none")
        pairs[key] = pairs.get(key, 0) + 1
    shown = re.findall(r'<tr data-model="([^"]+)" data-answered="([^"]+)">.*?'
                       r'<td class="num">([\d,]+)</td>', html, re.S)
    top = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [((m, a), int(n.replace(",", ""))) for m, a, n in shown] == top
    assert any(m == "auto" and a != "none" for (m, a), _ in top)


async def test_providers_page_shows_each_breaker_and_redacts_error_text(
    scenario: tuple[Client, list[UsageRecord]]
) -> None:
    client, records = scenario
    html = await _page(client, "/dashboard/providers")
    assert page_metrics(html) == {"healthy": "3", "probing": "1", "open": "1"}
    order = re.findall(r'data-deployment="([^"]+)"', html)
    assert order[:2] == ["anthropic/claude-sonnet-4-0", "vllm/meta-llama/Llama-3.3-70B-Instruct"]
    assert LEAKED not in html and "[REDACTED]" in html
    hour = [r for r in records if r.ts >= NOW - 3600 and r.deployment == order[0]]
    row = re.search(rf'data-deployment="{order[0]}".*?data-field="requests">([\d,]+)<', html,
                    re.S)
    assert row is not None and row.group(1) == fmt.num(len(hour))


async def test_tenants_page_shows_spend_against_budgets(
    scenario: tuple[Client, list[UsageRecord]]
) -> None:
    client, records = scenario
    html = await _page(client, "/dashboard/tenants")
    assert re.findall(r'data-tenant="([^"]+)"', html) == sorted(TENANTS)
    today, month = day_of(NOW), month_start_of(NOW)
    for tenant in TENANTS:
        spent = sum(r.cost for r in records if r.tenant == tenant and day_of(r.ts) >= month)
        row = re.search(rf'data-tenant="{tenant}".*?data-field="this-month">\s*<div '
                        r'class="use-figures">\s*<b>([^<]+)</b>', html, re.S)
        assert row is not None and row.group(1) == fmt.usd(spent)
    acme_today = sum(r.cost for r in records if r.tenant == "acme" and day_of(r.ts) == today)
    assert f"<b>{fmt.usd(acme_today)}</b><span class=\"muted\"> of $0.50</span>" in html
    focused = page_metrics(await _page(client, "/dashboard/tenants?tenant=globex"))
    spent = sum(r.cost for r in records if r.tenant == "globex" and day_of(r.ts) >= month)
    nobody_today = sum(1 for r in scripted_refusals(NOW) if r.tenant is None
                       and day_of(r.ts) == today)
    assert focused == {"selected-tenant": "globex", "model-spend-total": fmt.usd(spent),
                       **({"refused-unauthenticated": str(nobody_today)} if nobody_today else {})}
    for tenant in TENANTS:
        refused = sum(1 for r in scripted_refusals(NOW) if r.tenant == tenant
                      and day_of(r.ts) == today)
        cell = re.search(rf'data-tenant="{tenant}".*?data-field="refused-today">(.*?)</td>',
                         html, re.S)
        assert cell is not None and re.sub(r"<[^>]+>", "", cell.group(1)) == str(refused)


@pytest.mark.parametrize(("query", "keep"), [
    ("", lambda r: True),
    ("?tenant=acme&status=error", lambda r: r.tenant == "acme" and r.status >= 400),
    ("?cache=hit&window=1h", lambda r: r.cache == "hit" and r.ts >= NOW - 3600),
    ("?route=none&limit=500", lambda r: r.route is None),
    ("?model=claude-sonnet-4&status=200", lambda r: r.model == "claude-sonnet-4" and
     r.status == 200),
    ("?api=messages", lambda r: r.api == "messages"),
])
async def test_requests_page_lists_the_latest_matching_rows(
    scenario: tuple[Client, list[UsageRecord]], query: str, keep: Any
) -> None:
    client, records = scenario
    html = await _page(client, f"/dashboard/requests{query}")
    limit = 500 if "limit=500" in query else 100
    want = [r.request_id for r in reversed(records) if keep(r)][:limit]
    assert re.findall(r'data-request-id="([^"]+)"', html) == want
    assert page_metrics(html)["rows"] == str(len(want))
    shown = {r.request_id: r.api for r in records}
    assert re.findall(r'data-field="api">([a-z]+)<', html) == [shown[i] for i in want]


async def test_a_large_window_samples_rows_for_percentiles_and_says_so(
    scenario: tuple[Client, list[UsageRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.observability.dashboard.queries.MAX_SAMPLE_ROWS", 50)
    client, records = scenario
    shown = page_metrics(await _page(client, "/dashboard?window=1h"))  # no whole hour: raw rows
    inside = [(row_id, r) for row_id, r in enumerate(records, start=1)
              if NOW - 3600 <= r.ts < NOW]
    step = math.ceil(len(inside) / 50)
    sample = [r.latency_ms for row_id, r in inside if row_id % step == 0 and r.status < 400]
    assert step > 1
    assert shown["latency-p50"] == "≈ " + fmt.ms(nearest_rank(sample, 0.5))
    assert shown["requests"] == fmt.num(len(inside))  # counts stay exact


async def test_day_and_week_windows_read_whole_hours_from_the_roll_ups(
    scenario: tuple[Client, list[UsageRecord]]
) -> None:
    client, records = scenario
    store = client.app[STORE_KEY]
    # Rows changed behind the roll-ups' back show which windows read which: the roll-ups keep
    # the counts they were given, the raw rows the change.
    await store.db.execute("UPDATE usage SET cost = cost + 1.0")
    for window in ("24h", "7d"):
        since = NOW - WINDOWS[window].seconds
        h0, h1 = whole_hours(since, NOW)
        shown = page_metrics(await _page(client, f"/dashboard?window={window}"))
        edges = sum(1 for r in records if since <= r.ts < h0 or h1 <= r.ts < NOW)
        inside = [r for r in records if since <= r.ts < NOW]
        assert h0 < h1 and 0 < edges < len(inside)
        want = math.fsum(r.cost for r in inside) + edges
        assert f"{fmt.usd(want)} in the " in await _page(client, f"/dashboard?window={window}")
        assert shown["requests"] == fmt.num(len(inside))


async def test_the_dashboard_reads_through_a_read_only_connection_of_its_own(
    scenario: tuple[Client, list[UsageRecord]]
) -> None:
    client, _ = scenario
    reader = client.app[READER_KEY]
    assert reader.db is not client.app[STORE_KEY].db
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await reader.db.execute("DELETE FROM usage")


async def test_every_page_works_on_an_empty_ledger(aiohttp_client: Any, tmp_path: Path) -> None:
    client: Client = await aiohttp_client(observability_app(tmp_path, now=NOW))
    await login(client)
    for path in ("/dashboard", "/dashboard?window=7d", "/dashboard/providers",
                 "/dashboard/tenants", "/dashboard/requests"):
        html = await _page(client, path)
        assert "</html>" in html
    overview = page_metrics(await _page(client, "/dashboard"))
    assert overview["requests"] == "0" and overview["error-rate"] == fmt.DASH


async def test_pages_load_nothing_from_elsewhere_and_say_so(
    scenario: tuple[Client, list[UsageRecord]]
) -> None:
    client, _ = scenario
    response = await client.get("/dashboard")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    html = await response.text()
    assert not re.search(r'(src|href|action)="(https?:)?//', html)
    assert "<style" not in html and "style=" not in html and "<script>" not in html
    for asset in re.findall(r'(?:href|src)="(/dashboard/static/[^"]+)"', html):
        fetched = await client.get(asset.replace("&amp;", "&"))
        assert fetched.status == 200, asset


async def test_templates_dir_can_be_overridden_and_must_exist(tmp_path: Path) -> None:
    settings = ObservabilitySettings(templates_dir=tmp_path / "nowhere")
    with pytest.raises(RuntimeError, match="templates not found"):
        observability_app(tmp_path, now=NOW, settings=settings)


# Charts and formats --------------------------------------------------------------------------


def test_nice_ceiling_rounds_up_to_a_readable_axis() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 1, 13, 21, 24, 48, 51, 0.031)] == [
        1, 1, 1, 20, 25, 25, 50, 100, 0.05]


def test_bar_chart_stacks_series_and_escapes_text() -> None:
    svg = bar_chart("<b>", [Series("a", [1, 2]), Series("b", [1, 0])], ["x<1", "x2"],
                    ["one & two", "three"])
    assert svg.count('class="s0"') == 2 and svg.count('class="s1"') == 1
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "one &amp; two" in svg
    assert "No requests" in bar_chart("t", [Series("a", [0, 0])], ["1", "2"], ["", ""])


def test_line_chart_breaks_where_there_is_no_data() -> None:
    svg = line_chart("t", [Series("p50", [1.0, 2.0, None, 3.0])], ["a", "b", "c", "d"])
    path = re.search(r'<path d="([^"]+)"', svg)
    assert path is not None and path.group(1).count("M") == 2
    assert "<circle" in svg  # the lone last point still shows


def test_meter_and_share_bar_colour_by_fullness() -> None:
    assert "fill ok" in meter(0.2, "x") and "fill warn" in meter(0.85, "x")
    assert "fill danger" in meter(1.4, "x") and 'width="120.0"' in meter(1.4, "x")
    assert share_bar("mix", [("a", 3), ("b", 1)]).count("<rect") == 3


@pytest.mark.parametrize(("value", "text"), [
    (None, "—"), (0, "$0"), (0.5, "$0.50"), (0.1666, "$0.167"), (0.0047, "$0.0047"),
    (12.345, "$12.35"), (1234.5, "$1,234"), (0.000021, "$0.000021"), (-0.5, "-$0.50"),
])
def test_money_reads_with_the_digits_it_needs(value: float | None, text: str) -> None:
    assert fmt.usd(value) == text


def test_durations_shares_and_ages_read_naturally() -> None:
    assert [fmt.ms(v) for v in (None, 0.42, 123.4, 1234, 75_000)] == [
        "—", "0.4 ms", "123 ms", "1.23 s", "75 s"]
    assert [fmt.pct(v) for v in (None, 0, 0.004, 0.125, 1)] == ["—", "0%", "0.4%", "12.5%",
                                                                 "100%"]
    assert [fmt.ago(v) for v in (1, 42, 600, 7200, 200_000)] == [
        "just now", "42 s ago", "10 min ago", "2 h ago", "2 d ago"]
    assert [fmt.compact(v) for v in (950, 12_300, 4_500_000)] == ["950", "12.3k", "4.5M"]


async def test_embeddings_calls_show_on_the_requests_page_and_count_on_the_overview(
    scenario: tuple[Client, list[UsageRecord]]
) -> None:
    client, records = scenario
    call = UsageRecord(request_id="req_embed_0001", tenant="acme", key_id="key_acme",
                       model="all-MiniLM-L6-v2", status=200, ts=NOW - 30, tokens_in=12,
                       latency_ms=4.0, api="embeddings", answered_model="all-MiniLM-L6-v2")
    ledger = client.app[LEDGER_KEY]
    assert ledger.record(call)
    await ledger.flush()
    page = await _page(client, "/dashboard/requests?tenant=acme")
    row = re.search(r'data-request-id="req_embed_0001".*?</tr>', page, re.S)
    assert row is not None and '<td data-field="api">embeddings</td>' in row.group(0)
    hour = [r for r in records if r.ts >= NOW - 3600]
    shown = page_metrics(await _page(client, "/dashboard?window=1h"))
    assert shown["requests"] == fmt.num(len(hour) + 1)
