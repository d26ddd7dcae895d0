"""The auditor API (role ``auditor``, read-only): checkpoints, entries and proofs, so an
auditor can check the live log against the checkpoints they already hold."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.audit import proofs, query
from gateway.audit.errors import AuditError
from gateway.errors import InvalidInput, NotFound
from gateway.http.appkeys import GATEWAY
from gateway.http.operator import principal

MAX_PAGE = 1000


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer, not {raw!r}", status=400)
    return int(raw)


async def latest_checkpoint(request: web.Request) -> web.Response:
    await principal(request, "auditor")
    record = await query.latest_checkpoint(request.app[GATEWAY].db)
    if record is None:
        raise NotFound("no checkpoint yet (`gateway audit checkpoint` signs one)")
    return web.json_response({"size": record.size, "note": record.note, "created_at": record.created_at})


async def list_entries(request: web.Request) -> web.Response:
    await principal(request, "auditor")
    start = _int(request, "start", 0) or 0
    limit = min(_int(request, "limit", 100) or 100, MAX_PAGE)
    where = query.EntryFilter(
        start=start,
        end=_int(request, "end"),
        partner=request.query.get("partner"),
        case_token=request.query.get("case"),
        kind=request.query.get("kind"),
        since=request.query.get("since"),
        until=request.query.get("until"),
        limit=limit,
    )
    rows: list[dict[str, Any]] = await query.entries(request.app[GATEWAY].db, where)
    return web.json_response({"entries": rows, "limit": limit})


async def inclusion(request: web.Request) -> web.Response:
    await principal(request, "auditor")
    index = _int(request, "index")
    assert index is not None  # part of the path
    try:
        proof = await proofs.inclusion_proof(request.app[GATEWAY].db, index, _int(request, "size"))
    except (AuditError, ValueError) as exc:
        raise InvalidInput(str(exc), status=422) from None
    return web.json_response(proof.as_dict())


async def consistency(request: web.Request) -> web.Response:
    await principal(request, "auditor")
    old = _int(request, "old")
    if old is None:
        raise InvalidInput("query parameter old (the size of the checkpoint you hold) is required")
    try:
        proof = await proofs.consistency_proof(request.app[GATEWAY].db, old, _int(request, "new"))
    except (AuditError, ValueError) as exc:
        raise InvalidInput(str(exc), status=422) from None
    return web.json_response(proof.as_dict())
