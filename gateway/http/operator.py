"""The operator API: place and recall cases, read packages, timelines and scorecards."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.config import first_error
from gateway.errors import InvalidInput
from gateway.http.appkeys import GATEWAY
from gateway.http.routes import json_response, read_body, require_json
from gateway.onboarding import registry
from gateway.onboarding.tokens import Principal, authenticate
from gateway.placement import recall
from gateway.placement import service as placement
from gateway.supervision import scorecards as supervision
from gateway.supervision.timeline import case_timeline
from schemas.api import PlacementRequest, PlacementResponse, RecallRequest, RecallResponse

M = TypeVar("M", bound=BaseModel)
PRINCIPAL = "principal"


async def principal(request: web.Request, *roles: str) -> Principal:
    who = await authenticate(request.app[GATEWAY], request.headers.get("Authorization"))
    who.require(*roles)
    return who


async def body_of(request: web.Request, model: type[M]) -> M:
    require_json(request)
    body = await read_body(request)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidInput(f"invalid request body: {first_error(exc)}", status=422) from None


async def create_placement(request: web.Request) -> web.Response:
    who = await principal(request, "operator")
    req = await body_of(request, PlacementRequest)
    placed = await placement.place(
        request.app[GATEWAY], req.case, req.partner, req.purpose, actor=f"token:{who.token_id}"
    )
    body = PlacementResponse(
        package_id=placed.package_id,
        partner=placed.partner_id,
        purpose=placed.purpose,
        case_ref=placed.case_ref,
    )
    return json_response(body.model_dump(), status=201)


async def create_recall(request: web.Request) -> web.Response:
    who = await principal(request, "operator")
    req = await body_of(request, RecallRequest)
    done = await recall.recall(
        request.app[GATEWAY], req.case_id, req.partner, req.reason, actor=f"token:{who.token_id}"
    )
    body = RecallResponse(
        case_id=done.case_id,
        partner=done.partner,
        deletion_due=done.deletion_due,
        notice_package_id=done.notice_package_id,
    )
    return json_response(body.model_dump(), status=201)


async def get_package(request: web.Request) -> web.Response:
    await principal(request, "operator")
    return json_response(await placement.show(request.app[GATEWAY], request.match_info["package_id"]))


async def get_case(request: web.Request) -> web.Response:
    await principal(request, "operator")
    return json_response(await case_timeline(request.app[GATEWAY], request.match_info["case_id"]))


async def list_partners(request: web.Request) -> web.Response:
    await principal(request, "operator", "auditor")
    records = await registry.list_all(request.app[GATEWAY])
    return json_response(
        [
            {
                "id": r.id,
                "name": r.profile.name,
                "kind": r.profile.kind,
                "status": r.status,
                "status_reason": r.status_reason,
                "contract": r.profile.contract.model_dump(mode="json"),
                "profile_digest": r.profile_digest,
            }
            for r in records
        ]
    )


async def get_scorecard(request: web.Request) -> web.Response:
    await principal(request, "operator", "auditor")
    card = await supervision.scorecard(request.app[GATEWAY], request.match_info["partner_id"])
    return json_response(card.model_dump())
