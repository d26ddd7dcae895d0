"""RFC 9457 problem responses for every error, ours or aiohttp's, and request ids.

Every answer carries an ``X-Request-Id``: the caller's (a proxy's or client's id, so
that logs join up) when it is a plain token, else a new one. A server error (5xx) tells
the caller nothing of what failed, only that id; the log holds the real error with it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

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


class Refusals(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger aiohttp's server gets: a request it refuses before any handler runs
    (malformed HTTP, a line or a header too long, not HTTP at all) is one warning line,
    its status and the error's class, without the traceback aiohttp attaches or the
    client's bytes its message may quote."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        self._one_line(msg, args, exc_info)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        # aiohttp logs a first request that is not HTTP at all at debug level, with the
        # error: refused all the same, so one line too.
        if isinstance(kwargs.get("exc_info"), BaseException):
            self._one_line(msg, args, kwargs["exc_info"])
        else:
            super().debug(msg, *args, **kwargs)

    def _one_line(self, msg: object, args: tuple[object, ...], exc_info: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        status = getattr(exc, "code", None)
        what = ", ".join(
            part for part in (f"HTTP {status}" if status else "", type(exc).__name__ if exc else "") if part
        )
        text = str(msg) % args if args else str(msg)
        self.logger.warning("%s (%s)", text, what or "no detail")


#: aiohttp's server logger for the gateway's app (see ``create_app``).
refusals = Refusals(logging.getLogger("gateway.http.server"), {})
