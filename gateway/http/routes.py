"""The route table: one entry per operation, read both by the router and by OpenAPI."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiDictProxy

from gateway import jsontext
from gateway.errors import InvalidInput
from gateway.http.appkeys import TIMEOUTS


@dataclass(frozen=True)
class Query:
    """A query parameter as OpenAPI documents it: a JSON Schema type, maybe an enum."""

    description: str
    type: str = "string"
    enum: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    required: bool = False

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.enum:
            schema["enum"] = list(self.enum)
        for key in ("minimum", "maximum"):
            if getattr(self, key) is not None:
                schema[key] = getattr(self, key)
        return schema


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
    query: dict[str, str | Query] = field(default_factory=dict)
    """Query parameters: name -> description, or a typed `Query` (documented in OpenAPI;
    see `known_query`)."""
    media: str = "application/json"
    """The media type of the success response."""
    match: str = ""
    """The router's path when it differs from the documented one (a parameter that
    spans several path segments)."""


def json_response(data: Any, *, status: int = 200, content_type: str = "application/json") -> web.Response:
    """Every JSON answer of the API: standard JSON only (`gateway.jsontext`)."""
    return web.json_response(data, status=status, content_type=content_type, dumps=jsontext.dumps)


def require_json(request: web.Request) -> None:
    """415 unless the body is declared ``application/json``; a header aiohttp cannot
    parse (it raises on some malformed parameters) is refused the same way."""
    try:
        media_type = request.content_type
    except Exception:  # noqa: BLE001 - any parse failure of a client's header is a 415
        media_type = "(unparseable)"
    if media_type != "application/json":
        raise InvalidInput(f"content type must be application/json, not {media_type!r}", status=415)


def known_query(request: web.Request, known: dict[str, str | Query]) -> None:
    """400 for a query parameter the route does not take: a misspelt filter must not
    quietly match everything."""
    unknown = sorted(set(request.query) - set(known))
    if unknown:
        raise InvalidInput(
            f"unknown query parameter {', '.join(unknown)}; this route takes: {', '.join(known) or 'none'}",
            status=400,
        )


#: Every id a path names (partner, case and package ids, entry indices) is made of these;
#: anything else (NUL, control or format characters, bytes that are not UTF-8, which
#: arrive percent-encoded) is refused before it reaches a handler or the database.
_PATH_PARAMETER = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: A tile's index spans path segments (``x001/x234/067.p/8``): the same characters and '/'.
_TILE_INDEX = re.compile(r"[A-Za-z0-9._/-]{1,128}")


def check_parameters(request: web.Request) -> None:
    """400 for a path parameter no id can be, or a query parameter holding a control
    or format character (a NUL, which PostgreSQL refuses in text, among them)."""
    for name, value in request.match_info.items():
        tile = name == "index" and request.path.startswith("/v1/audit/tile/")
        allowed = _TILE_INDEX if tile else _PATH_PARAMETER
        if not allowed.fullmatch(value):
            raise InvalidInput(
                f"path parameter {name}: not an id (letters, digits, '.', '_' and '-', at most 128)",
                status=400,
            )
    for name, value in request.query.items():
        if not (name + value).isprintable():
            shown = name if name.isprintable() else repr(name)[:40]
            raise InvalidInput(f"query parameter {shown}: holds a control or format character", status=400)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


@web.middleware
async def parameters(request: web.Request, handler: Handler) -> web.StreamResponse:
    check_parameters(request)
    return await handler(request)
async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The whole request body: 413 beyond ``limit`` bytes (and beyond the app's
    ``client_max_size`` in any case), 408 if it is not in within the app's body timeout
    (a client trickling a body holds a connection and a task)."""
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise InvalidInput(f"body larger than {limit} bytes", status=413)
    body = await _received(request, request.read())
    if limit is not None and len(body) > limit:
        raise InvalidInput(f"body larger than {limit} bytes", status=413)
    return body


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """A form body (the dashboard's), as `read_body` reads a body: 408 after the body
    timeout, 400 if the client hangs up part-way."""
    return await _received(request, request.post())


async def _received(request: web.Request, reading: Awaitable[T]) -> T:
    """``reading``, the request's body, within the app's body timeout. A client that
    closes the connection before its body is in gets a 400 nobody reads: a refusal of
    its input, not a fault of the gateway's (no 500, no error in the log)."""
    seconds = request.config_dict[TIMEOUTS].body
    try:
        async with asyncio.timeout(seconds):
            return await reading
    except TimeoutError:
        raise InvalidInput(f"request body not received within {seconds:g} s", status=408) from None
    except ConnectionResetError:
        raise InvalidInput("the connection closed before the whole body arrived", status=400) from None
