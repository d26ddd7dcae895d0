"""RFC 9457 problem responses for every error, ours or aiohttp's."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError

log = logging.getLogger("gateway.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, detail: str, kind: str | None = None) -> web.Response:
    title = HTTPStatus(status).phrase
    slug = kind or title.lower().replace(" ", "-")
    return web.json_response(
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
