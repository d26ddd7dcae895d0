"""The route table: one entry per operation, read both by the router and by OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


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
