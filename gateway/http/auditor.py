"""The auditor API (role ``auditor``, read-only): checkpoints, entries and proofs, so an
auditor can check the live log against the checkpoints they already hold.

The latest checkpoint and the tiles of hashes (C2SP tlog-tiles) are public: they hold
only hashes and signatures, and monitors and witnesses follow the log with them. The
entries themselves (entry bundles included) stay behind the auditor role."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gateway.audit import proofs, query, tiles
from gateway.audit.errors import AuditError
from gateway.errors import InvalidInput, NotFound
from gateway.http.appkeys import GATEWAY
from gateway.http.operator import principal
from gateway.http.routes import Query, json_response, known_query
from gateway.placement.service import case_token

MAX_PAGE = 1000


#: Query parameters of each route (the route table documents them in OpenAPI).
ENTRY_QUERY: dict[str, str | Query] = {
    "start": Query("first index (default 0)", "integer", minimum=0),
    "end": Query("index to stop before", "integer", minimum=0),
    "partner": "partner id",
    "case": "the bank's case id (matched through its audit token)",
    "case_token": "a case's audit token (case_...), as entries hold it",
    "kind": "entry kind, e.g. disclosure",
    "since": "RFC 3339 date or time, inclusive",
    "until": "RFC 3339 date or time, exclusive",
    "limit": Query(f"most entries returned (default 100, at most {MAX_PAGE})", "integer", minimum=1),
}
INCLUSION_QUERY: dict[str, str | Query] = {
    "size": Query("tree size the proof is for (default: the latest checkpoint's)", "integer", minimum=1)
}
CONSISTENCY_QUERY: dict[str, str | Query] = {
    "old": Query("size of the checkpoint you hold", "integer", minimum=1, required=True),
    "new": Query("the newer size (default: the latest checkpoint's)", "integer", minimum=1),
}
#: An audit token of a case, as entries hold it (`gateway.placement.service.case_token`).
CASE_TOKEN = re.compile(r"case_[0-9a-f]{32}")
#: Indices and sizes past this are refused (SQLite integers are 64-bit).
MAX_INT = 2**62


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or int(raw) > MAX_INT:
        raise InvalidInput(f"{name} must be an integer from 0 to 2**62, not {raw[:40]!r}", status=400)
    return int(raw)


async def latest_checkpoint(request: web.Request) -> web.Response:
    """The latest signed checkpoint, with its witnesses' cosignatures: the note as
    text/plain (C2SP tlog-tiles), or as JSON with its time for ``Accept: application/json``."""
    record = await query.latest_checkpoint(request.app[GATEWAY].db)
    if record is None:
        raise NotFound("no checkpoint yet (`gateway audit checkpoint` signs one)")
    fresh = {"Cache-Control": "max-age=2"}  # it changes as the log grows
    if "application/json" in request.headers.get("Accept", ""):
        body = {"size": record.size, "note": record.note, "created_at": record.created_at}
        return web.json_response(body, headers=fresh)
    return web.Response(text=record.note, content_type="text/plain", charset="utf-8", headers=fresh)


async def tile(request: web.Request) -> web.Response:
    """A tile of hashes (public) or an entry bundle (auditor) of the signed log."""
    wanted = tiles.parse(request.match_info["level"], request.match_info["index"])
    if wanted.level is None:
        await principal(request, "auditor")
    gw = request.app[GATEWAY]
    latest = await query.latest_checkpoint(gw.db)
    data = await tiles.read(gw.db, wanted, 0 if latest is None else latest.size)
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


async def list_entries(request: web.Request) -> web.Response:
    await principal(request, "auditor")
    known_query(request, ENTRY_QUERY)
    start = _int(request, "start", 0) or 0
    limit = min(_int(request, "limit", 100) or 100, MAX_PAGE)
    case_id, token = request.query.get("case"), request.query.get("case_token")
    if case_id is not None and token is not None:
        raise InvalidInput("give case (the bank's case id) or case_token, not both", status=400)
    if case_id is not None and CASE_TOKEN.fullmatch(case_id):
        raise InvalidInput("case takes the bank's case id; pass an audit token as case_token", status=400)
    gw = request.app[GATEWAY]
    where = query.EntryFilter(
        start=start,
        end=_int(request, "end"),
        partner=request.query.get("partner"),
        case_token=case_token(gw, case_id) if case_id is not None else token,
        kind=request.query.get("kind"),
        since=request.query.get("since"),
        until=request.query.get("until"),
        limit=limit,
    )
    rows: list[dict[str, Any]] = await query.entries(gw.db, where)
    return json_response({"entries": rows, "limit": limit})


async def inclusion(request: web.Request) -> web.Response:
    await principal(request, "auditor")
    known_query(request, INCLUSION_QUERY)
    index = _int(request, "index")
    assert index is not None  # part of the path
    try:
        proof = await proofs.inclusion_proof(request.app[GATEWAY].db, index, _int(request, "size"))
    except (AuditError, ValueError) as exc:
        raise InvalidInput(str(exc), status=422) from None
    return json_response(proof.as_dict())


async def consistency(request: web.Request) -> web.Response:
    await principal(request, "auditor")
    known_query(request, CONSISTENCY_QUERY)
    old = _int(request, "old")
    if old is None:
        raise InvalidInput("query parameter old (the size of the checkpoint you hold) is required")
    try:
        proof = await proofs.consistency_proof(request.app[GATEWAY].db, old, _int(request, "new"))
    except (AuditError, ValueError) as exc:
        raise InvalidInput(str(exc), status=422) from None
    return json_response(proof.as_dict())
