"""RFC 9457 problem responses for every error, ours or aiohttp's, and request ids.

Every answer carries an ``X-Request-Id``: the caller's (a proxy's or client's id, so
that logs join up) when it is a plain token, else a new one. A server error (5xx) tells
the caller nothing of what failed, only that id; the log holds the real error with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from gateway.errors import GatewayError
from gateway.http.observe import request_id as observed_id
from gateway.http.routes import json_response
from gateway.logs import REQUEST_ID as CURRENT_REQUEST

log = logging.getLogger("gateway.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = "X-Request-Id"
#: What a 5xx says, to operators and partners alike: nothing of the cause, which is
#: logged under the request id.
SERVER_FAULT = (
    "internal error, a fault on the gateway's side: try again later (a report with the same "
    "webhook-id); the bank finds it in its log by request id {rid}"
)


def problem(
    status: int, detail: str, kind: str | None = None, *, request_id: str | None = None
) -> web.Response:
    title = HTTPStatus(status).phrase
    slug = kind or title.lower().replace(" ", "-")
    body: dict[str, object] = {
        "type": f"/problems/{slug}", "title": title, "status": status, "detail": detail
    }
    if request_id is not None:
        body["request_id"] = request_id
    return json_response(body, status=status, content_type="application/problem+json")


def request_id(request: web.Request) -> str:
    """The id of this request: the one the access log uses (`gateway.http.observe`),
    made there when the request came in."""
    return CURRENT_REQUEST.get() or observed_id(request)


def _failed(request: web.Request, rid: str, status: int, detail: str) -> web.Response:
    if status >= 500:
        # The path as sent (percent-encoded): nothing a caller typed can forge a log line.
        log.error("request %s: %s %s: %s", rid, request.method, request.rel_url.raw_path, detail)
        detail = SERVER_FAULT.format(rid=rid)
    return problem(status, detail, request_id=rid)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id(request)
    try:
        response = await handler(request)
    except GatewayError as exc:
        response = _failed(request, rid, exc.http_status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _failed(request, rid, exc.status, exc.text or exc.reason)
    except Exception as exc:
        # Class name only: a message could carry personal data from a request.
        response = _failed(request, rid, 500, f"unhandled {type(exc).__name__}")
    response.headers[REQUEST_ID] = rid
    return response
