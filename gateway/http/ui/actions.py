"""The dashboard's actions (POST, each behind the session's CSRF token): sign in and
out, suspend and reinstate a partner, requeue dead packages, export the audit bundle.
Each calls the service the CLI calls, with the signed-in token as the actor."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from gateway.audit import bundle
from gateway.delivery import requeue as requeuing
from gateway.errors import GatewayError, InvalidInput
from gateway.http.routes import read_form
from gateway.http.ui import sessions
from gateway.http.ui.pages import safe_next
from gateway.http.ui.web import gateway_of, need, render
from gateway.onboarding import registry

STATUSES = {"suspend": "suspended", "reinstate": "active"}
CHUNK = 1 << 16


def see_other(target: str) -> web.Response:
    """A redirect that can carry cookies (a raised one would lose them)."""
    return web.Response(status=303, headers={"Location": target})


async def login(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    sessions.check_csrf(request.cookies.get(sessions.LOGIN_COOKIE, ""), form.get(sessions.CSRF_FIELD))
    target = safe_next(str(form.get("next", "")))
    try:
        secret, session = await sessions.sign_in(gateway_of(request), str(form.get("token", "")))
    except GatewayError as exc:
        response = render(request, "login.html", status=401, csrf=str(form.get(sessions.CSRF_FIELD)),
                          next=target, error=str(exc))  # fmt: skip
        return response
    response = see_other(target)
    age = sessions.seconds_until(session.expires_at, gateway_of(request).now())
    sessions.set_cookie(request, response, sessions.COOKIE, secret, age)
    response.del_cookie(sessions.LOGIN_COOKIE, path=sessions.PATH)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await sessions.sign_out(gateway_of(request), request.cookies.get(sessions.COOKIE))
    response = see_other("/ui/login")
    response.del_cookie(sessions.COOKIE, path=sessions.PATH)
    return response


def _actor(request: web.Request) -> str:
    return f"token:{need(request, 'act').principal.token_id}"


async def set_status(request: web.Request) -> web.StreamResponse:
    actor = _actor(request)
    form = await request.post()
    action = str(form.get("action", ""))
    if action not in STATUSES:
        raise InvalidInput("action must be suspend or reinstate")
    partner_id = request.match_info["partner_id"]
    reason = str(form.get("reason", "")).strip()
    if not reason:
        raise InvalidInput("give a reason: it goes into the audit log")
    await registry.set_status(gateway_of(request), partner_id, STATUSES[action], reason=reason, actor=actor)
    raise web.HTTPSeeOther(f"/ui/partners/{partner_id}?done={quote(STATUSES[action])}")


async def requeue(request: web.Request) -> web.StreamResponse:
    actor = _actor(request)
    form = await request.post()
    partner_id = request.match_info["partner_id"]
    ids = tuple(str(v) for v in form.getall("package", []))
    reason = str(form.get("reason", "")).strip()
    if form.get("all") == "1":
        selection = requeuing.Selection(partner_id=partner_id)
    elif ids:
        selection = requeuing.Selection(package_ids=ids)
    else:
        raise InvalidInput("choose the dead packages to requeue, or all of them")
    done = await requeuing.requeue(gateway_of(request), selection, actor=actor, reason=reason)
    summary = f"requeued {len(done.requeued)}, refused {len(done.refused)}"
    if done.refused:
        summary += ": " + "; ".join(f"{p}: {why}" for p, why in sorted(done.refused.items()))
    raise web.HTTPSeeOther(f"/ui/partners/{partner_id}?done={quote(summary)}")


async def export_bundle(request: web.Request) -> web.StreamResponse:
    """The audit bundle (`gateway audit export`) as a zip download; it signs a
    checkpoint first, as the command does."""
    need(request, "audit")
    gw = gateway_of(request)
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        folder = Path(tmp) / "audit-bundle"
        await bundle.export_bundle(gw.db, gw.custody.public_jwks(), gw.audit_signer, folder)
        archive = await asyncio.to_thread(shutil.make_archive, str(Path(tmp) / "audit-bundle"), "zip", tmp,
                                          "audit-bundle")  # fmt: skip
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip",
            "Content-Disposition": 'attachment; filename="audit-bundle.zip"',
        })  # fmt: skip
        await response.prepare(request)
        with open(archive, "rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                await response.write(chunk)
        await response.write_eof()
    return response


ROUTES = [
    ("POST", "/login", login),
    ("POST", "/logout", logout),
    ("POST", "/partners/{partner_id}/status", set_status),
    ("POST", "/partners/{partner_id}/requeue", requeue),
    ("POST", "/audit/bundle", export_bundle),
]
