"""The dashboard's pages (GET): sign-in, overview, partner, violations (and their CSV),
case timeline, attestations, audit."""

from __future__ import annotations

import csv
import io
import secrets
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aiohttp import web

from gateway.audit import query
from gateway.clock import isotime
from gateway.errors import InvalidInput
from gateway.http.ui import sessions, views
from gateway.http.ui.format import pretty
from gateway.http.ui.web import ROLES, gateway_of, need, render
from gateway.onboarding import registry
from gateway.ops.checks import audit_state
from gateway.supervision import scorecards

#: Most violations a page or an export shows.
MAX_VIOLATIONS = 1000
CSV_COLUMNS = ["id", "at", "partner_id", "case_id", "rule", "message"]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only, never another site."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


async def login_page(request: web.Request) -> web.Response:
    nonce = secrets.token_urlsafe(24)
    response = render(request, "login.html", csrf=nonce, next=safe_next(request.query.get("next")), error="")
    age = int(sessions.LOGIN_LIFETIME.total_seconds())
    sessions.set_cookie(request, response, sessions.LOGIN_COOKIE, nonce, age)
    return response


async def overview(request: web.Request) -> web.Response:
    need(request, "overview")
    return render(request, "overview.html", **await views.overview(gateway_of(request)))


async def partner(request: web.Request) -> web.Response:
    need(request, "partner")
    gw = gateway_of(request)
    data = await views.partner(gw, request.match_info["partner_id"])
    return render(request, "partner.html", rules=views.rule_names(gw), notice=request.query.get("done", ""),
                  **data)  # fmt: skip


def _day(raw: str | None, name: str, end: bool = False) -> str | None:
    """A date from a filter form as a stored time (the start of that day, UTC; the end
    of it for ``until``)."""
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name}: {raw[:20]!r} is not a date (YYYY-MM-DD)") from None
    return isotime(datetime.combine(day + timedelta(days=1 if end else 0), time(), UTC))


def violation_filter(request: web.Request) -> scorecards.ViolationFilter:
    q = request.query
    since = _day(q.get("since"), "since")
    until = _day(q.get("until"), "until", end=True)
    return scorecards.ViolationFilter(q.get("partner") or None, q.get("rule") or None, since, until)


async def violations(request: web.Request) -> web.Response:
    session = need(request, "violations")
    gw = gateway_of(request)
    where = violation_filter(request)
    detail = session.may(*ROLES["evidence"])
    rows = await scorecards.violations(gw, limit=MAX_VIOLATIONS, where=where, detail=detail)
    partners = [r.id for r in await registry.list_all(gw)]
    return render(request, "violations.html", rows=rows, rules=views.rule_names(gw), partners=partners,
                  query=dict(request.query), limit=MAX_VIOLATIONS)  # fmt: skip


def _csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _plain(value: Any) -> Any:
    return pretty(value) if isinstance(value, dict | list) else value


async def violations_csv(request: web.Request) -> web.Response:
    session = need(request, "violations")
    detail = session.may(*ROLES["evidence"])
    rows = await scorecards.violations(gateway_of(request), limit=MAX_VIOLATIONS,
                                       where=violation_filter(request), detail=detail)  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out)
    columns = CSV_COLUMNS + (["source", "evidence"] if detail else [])
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(_plain(row[c])) for c in columns])
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="violations.csv"'})  # fmt: skip


async def case_search(request: web.Request) -> web.Response:
    need(request, "case")
    case_id = request.query.get("case_id", "").strip()
    if case_id:
        raise web.HTTPSeeOther(f"/ui/cases/{case_id}")
    return render(request, "case_search.html")


async def case(request: web.Request) -> web.Response:
    need(request, "case")
    gw = gateway_of(request)
    return render(request, "case.html", rules=views.rule_names(gw),
                  **await views.case(gw, request.match_info["case_id"]))  # fmt: skip


async def attestations(request: web.Request) -> web.Response:
    need(request, "attestations")
    gw = gateway_of(request)
    rows = await scorecards.overdue_attestations(gw, overdue_only=False)
    now = isotime(gw.now())
    return render(request, "attestations.html", rows=rows, now=now)


async def audit(request: web.Request) -> web.Response:
    need(request, "audit")
    gw = gateway_of(request)
    async with gw.db.transaction() as tx:
        state = await audit_state(tx)
    recent = (await query.checkpoints(gw.db))[-20:][::-1]
    return render(request, "audit.html", state=state, checkpoints=recent, lag=state.lag(gw.now()),
                  now=gw.now())  # fmt: skip


ROUTES = [
    ("GET", "/login", login_page),
    ("GET", "/", overview),
    ("GET", "/partners/{partner_id}", partner),
    ("GET", "/violations", violations),
    ("GET", "/violations.csv", violations_csv),
    ("GET", "/cases", case_search),
    ("GET", "/cases/{case_id}", case),
    ("GET", "/attestations", attestations),
    ("GET", "/audit", audit),
]
