"""RFC 9457 problem responses for every error, ours or aiohttp's."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from gateway.errors import GatewayError
from gateway.http.routes import json_response

log = logging.getLogger("gateway.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, detail: str, kind: str | None = None) -> web.Response:
    title = HTTPStatus(status).phrase
    slug = kind or title.lower().replace(" ", "-")
    return json_response(
        {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
    )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return problem(exc.http_status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.text or exc.reason)
    except Exception as exc:
        # Class name only: a message could carry personal data from a request.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path)
        return problem(500, "internal error")
