"""The route table: one entry per operation, read both by the router and by OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.errors import InvalidInput


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
    match: str = ""
    """The router's path when it differs from the documented one (a parameter that
    spans several path segments)."""


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
