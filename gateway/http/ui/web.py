"""The dashboard's application: mounted under ``/ui`` beside the API, with its own
middleware (sign-in, CSRF, HTML error pages), templates, static files and a CSP of its
own that allows same-origin styles and images only (the pages run no script)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from gateway.core import Gateway
from gateway.errors import GatewayError, Unauthorized
from gateway.http.appkeys import GATEWAY
from gateway.http.routes import read_form
from gateway.http.ui import sessions

HERE = Path(__file__).parent
SESSION = web.RequestKey("ui_session", sessions.Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Who may do what: the same roles the API asks for the same data.
READ = ("operator", "auditor")
ROLES: dict[str, tuple[str, ...]] = {
    "overview": READ,
    "partner": READ,
    "violations": READ,
    "attestations": READ,
    "evidence": ("operator",),  # a violation's evidence, as GET /v1/cases/{id} shows it
    "case": ("operator",),
    "act": ("operator",),  # suspend, reinstate, requeue
    "audit": ("auditor",),
}
NAV = [
    ("overview", "/ui/", "Overview"),
    ("violations", "/ui/violations", "Violations"),
    ("attestations", "/ui/attestations", "Attestations"),
    ("case", "/ui/cases", "Cases"),
    ("audit", "/ui/audit", "Audit"),
]
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: Paths open without a session.
PUBLIC = ("/ui/login", "/ui/static/")


def gateway_of(request: web.Request) -> Gateway:
    return request.config_dict[GATEWAY]


def need(request: web.Request, what: str) -> sessions.Session:
    """The session, if its role may ``what`` (`ROLES`); else 403."""
    session = request[SESSION]
    session.principal.require(*ROLES[what])
    return session


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    session = request.get(SESSION)
    nav = [(url, label) for what, url, label in NAV if session and session.may(*ROLES[what])]
    context.update(session=session, nav=nav, path=request.path, may=lambda w: bool(session and
                   session.may(*ROLES[w])))  # fmt: skip
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def error_page(request: web.Request, status: int, detail: str) -> web.Response:
    return render(request, "error.html", status=status, status_code=status, detail=detail)


async def _authorize(request: web.Request) -> None:
    gw = gateway_of(request)
    session = await sessions.current(gw, request.cookies.get(sessions.COOKIE))
    if session is None:
        if request.method == "GET":
            raise web.HTTPSeeOther(f"/ui/login?next={quote(request.path_qs, safe='/')}")
        raise Unauthorized("your session has ended: sign in again")
    request[SESSION] = session
    if request.method == "POST":
        form = await read_form(request)
        sessions.check_csrf(session.csrf, form.get(sessions.CSRF_FIELD))


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if not request.path.startswith(PUBLIC):
            await _authorize(request)
        return await handler(request)
    except GatewayError as exc:
        return error_page(request, exc.http_status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_page(request, exc.status, exc.reason)


async def ui_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
