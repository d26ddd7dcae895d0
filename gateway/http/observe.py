"""The outermost middleware: request id, access log line, refused callbacks logged with
their reason, and the HTTP metrics. It sees every answer, problem documents included.

The request id is the caller's ``X-Request-Id`` when it is a short token, else a new
one; log lines written while the request is handled carry it. The access line names
the route's template (``/v1/cases/{case_id}``), not the path, so ids in paths stay out
of the log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.logs import REQUEST_ID, context
from gateway.ops import metrics

log = logging.getLogger("gateway.access")
refusals = logging.getLogger("gateway.callbacks")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-Id"
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CALLBACK_ROUTE = "/v1/partners/{partner_id}/callbacks"
#: Refusals that come after a caller proved who it is (a callback's signature checks).
AFTER_AUTHENTICATION = frozenset({403, 409, 422})
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    # 128 random bits in 32 hex digits, as uuid4().hex gave, for a third of its cost.
    return given if given and _TOKEN.fullmatch(given) else os.urandom(16).hex()


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id(request)
    token = REQUEST_ID.set(rid)
    started = time.perf_counter()
    status, response = 500, None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        seconds = time.perf_counter() - started
        _record(request, rid, status, seconds, response)
        REQUEST_ID.reset(token)


def _record(
    request: web.Request, rid: str, status: int, seconds: float, response: web.StreamResponse | None
) -> None:
    route = route_of(request)
    metrics.labelled(metrics.REQUEST_SECONDS, route, request.method).observe(seconds)
    # The id the caller was answered with, if the problem layer set one.
    rid = (response.headers.get(REQUEST_ID_HEADER) if response is not None else None) or rid
    partner = request.match_info.get("partner_id")
    if partner is not None and status >= 400 and status not in AFTER_AUTHENTICATION:
        # A path is anybody's text: a partner id is logged and counted only once the
        # request proved it is that partner's (or at least that the partner exists).
        partner = "unknown"
    if route == CALLBACK_ROUTE:
        metrics.labelled(metrics.CALLBACKS, partner or "unknown", str(status)).inc()
        if status >= 400:
            refusals.warning("callback refused: %s", _reason(response),
                             extra=context(request_id=rid, partner=partner, status=status))  # fmt: skip
    if not log.isEnabledFor(logging.INFO):
        return  # the line's fields are not even gathered
    log.info(
        "%s %s %d",
        request.method,
        route,
        status,
        extra=context(request_id=rid, partner=partner, status=status, ms=round(seconds * 1000, 1),
                      remote=request.remote),
    )  # fmt: skip


def _reason(response: web.StreamResponse | None) -> str:
    """The problem document's detail of a refusal, without what it quotes of the
    request (``'...'``: a partner id, a case_ref, a webhook id, anybody's text)."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes):
        return "(no detail)"
    try:
        detail = str(json.loads(body).get("detail", "(no detail)"))
    except (ValueError, AttributeError):
        return "(no detail)"
    return _QUOTED.sub("'…'", detail)
