"""The operator API of erasure requests: make one, see where it stands."""

from __future__ import annotations

from aiohttp import web

from gateway.http.appkeys import GATEWAY
from gateway.http.operator import body_of, principal
from gateway.http.routes import json_response
from gateway.lifecycle import erasure
from schemas.api import ErasureRequest


async def create_erasure(request: web.Request) -> web.Response:
    """The identity document number travels in the body, never in the URL (access logs)."""
    who = await principal(request, "operator")
    req = await body_of(request, ErasureRequest)
    done = await erasure.erase(
        request.app[GATEWAY], req.id_type, req.id_number.strip(), req.reason, actor=f"token:{who.token_id}"
    )
    return json_response(done, status=201)


async def get_erasure(request: web.Request) -> web.Response:
    await principal(request, "operator", "auditor")
    (found,) = await erasure.status(request.app[GATEWAY], request.match_info["erasure_id"])
    return json_response(found)
