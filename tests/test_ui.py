"""The dashboard without a browser: every page and action asks for a session, every
action for its CSRF token; the pieces the pages are made of."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.core import Gateway
from gateway.http import create_app
from gateway.http.ui import charts, sessions
from gateway.http.ui.format import age, local, utc
from gateway.http.ui.pages import _csv_cell, safe_next
from gateway.onboarding import tokens

OPEN = {"/ui/login", "/ui/static"}


async def test_every_dashboard_route_asks_for_a_session(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    routes = {(r.method, r.resource.canonical) for r in client.app.router.routes()
              if r.resource and r.resource.canonical.startswith("/ui/")}  # fmt: skip
    assert ("POST", "/ui/partners/{partner_id}/status") in routes
    for method, path in routes:
        if path.startswith(tuple(OPEN)) or method == "HEAD":
            continue
        url = re.sub(r"\{\w+\}", "x", path)
        resp = await client.request(method, url, allow_redirects=False)
        expected = 303 if method == "GET" else 401
        assert resp.status == expected, (method, path)
        if method == "GET":
            assert resp.headers["Location"].startswith("/ui/login?next=")


async def test_sessions_follow_their_token(gw: Gateway) -> None:
    token = await tokens.create(gw, "auditor", "t", actor="test")
    secret, session = await sessions.sign_in(gw, token)
    again = await sessions.current(gw, secret)
    assert again is not None and again.role == "auditor" and again.csrf == session.csrf
    async with gw.db.transaction() as tx:
        stored = await tx.fetchall("SELECT secret_hash FROM ui_sessions")
    assert [r["secret_hash"] for r in stored] != [secret], "only a hash is stored"
    await tokens.revoke(gw, token, actor="test")
    assert await sessions.current(gw, secret) is None, "a revoked token ends its sessions"
    assert await sessions.current(gw, "forged") is None


async def test_the_sign_in_form_needs_its_own_cookie(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    token = await tokens.create(gw, "operator", "t", actor="test")
    forged = await client.post("/ui/login", data={"token": token, "csrf": "guess"}, allow_redirects=False)
    assert forged.status == 403
    page = await client.get("/ui/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert nonce is not None
    signed = await client.post("/ui/login", data={"token": token, "csrf": nonce[1]}, allow_redirects=False)
    assert signed.status == 303 and signed.headers["Location"] == "/ui/"
    cookie = signed.headers.getall("Set-Cookie")[0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie


def test_pieces() -> None:
    assert safe_next("//evil.example/ui/") == "/ui/"
    assert safe_next("/ui/violations?rule=x") == "/ui/violations?rule=x"
    assert safe_next("https://evil.example/") == "/ui/"
    assert _csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _csv_cell("plain") == "plain"
    assert utc("2026-01-01T16:00:00.000000Z") == "2026-01-01 16:00 UTC"
    assert local("2026-01-01T16:00:00.000000Z", "Asia/Shanghai") == "2026-01-02 00:00 Asia/Shanghai"
    assert age(3725) == "1 h 2 min" and age(None) == "—"
    weeks = [date(2026, 1, 5), date(2026, 1, 12)]
    chart = charts.line("x", "X", weeks, [None, 0.5], "%")
    assert [p.value for p in chart.points] == [0.5] and chart.path.startswith("M")
    bars = charts.stacked("v", "V", weeks, {"cn.hours": [1, 2], "cn.x": [0, 1]})
    assert sum(b.value for b in bars.bars) == 4 and len(bars.series) == 2
