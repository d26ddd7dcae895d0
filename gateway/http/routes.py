"""The route table: one entry per operation, read both by the router and by OpenAPI."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.errors import InvalidInput
from gateway.http.appkeys import TIMEOUTS


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    roles: tuple[str, ...] = ()
    """Roles that may call it; empty means no bearer token (partners sign instead)."""
    request: Any = None
    response: Any = None
    status: int = 200
    tags: tuple[str, ...] = field(default=("operator",))
    query: dict[str, str] = field(default_factory=dict)
    """Query parameters: name -> description (documented in OpenAPI; see `known_query`)."""


def require_json(request: web.Request) -> None:
    """415 unless the body is declared ``application/json``; a header aiohttp cannot
    parse (it raises on some malformed parameters) is refused the same way."""
    try:
        media_type = request.content_type
    except Exception:  # noqa: BLE001 - any parse failure of a client's header is a 415
        media_type = "(unparseable)"
    if media_type != "application/json":
        raise InvalidInput(f"content type must be application/json, not {media_type!r}", status=415)


def known_query(request: web.Request, known: dict[str, str]) -> None:
    """400 for a query parameter the route does not take: a misspelt filter must not
    quietly match everything."""
    unknown = sorted(set(request.query) - set(known))
    if unknown:
        raise InvalidInput(
            f"unknown query parameter {', '.join(unknown)}; this route takes: {', '.join(known) or 'none'}",
            status=400,
        )


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The whole request body: 413 beyond ``limit`` bytes (and beyond the app's
    ``client_max_size`` in any case), 408 if it is not in within the app's body timeout
    (a client trickling a body holds a connection and a task)."""
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise InvalidInput(f"body larger than {limit} bytes", status=413)
    seconds = request.app[TIMEOUTS].body
    try:
        async with asyncio.timeout(seconds):
            body = await request.read()
    except TimeoutError:
        raise InvalidInput(f"request body not received within {seconds:g} s", status=408) from None
    if limit is not None and len(body) > limit:
        raise InvalidInput(f"body larger than {limit} bytes", status=413)
    return body
