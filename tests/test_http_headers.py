"""Every answer of the API, data or problem, is kept out of caches and is not sniffed,
framed or referred: the operator and auditor routes answer with personal data."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.core import Gateway
from gateway.http import create_app
from gateway.http.app import ROUTES
from gateway.onboarding import tokens
from gateway.placement import service as placement
from schemas.case import Case
from tests.helpers import sample_case

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


def secured(answer: Any) -> dict[str, str | None]:
    return {name: answer.headers.get(name) for name in SECURITY_HEADERS}


async def test_every_route_answers_with_the_security_headers(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    admin = {"Authorization": "Bearer " + await tokens.create(gw, "admin", "test", actor="test")}
    case = Case.model_validate_json(sample_case().read_text())
    placed = await placement.place(gw, case, "acme-collect", "collection", actor="test")
    real = {"package_id": placed.package_id, "case_id": case.case_id, "partner_id": "acme-collect"}
    for route in ROUTES:
        for ids in (real, {}):
            path = re.sub(r"\{(\w+)\}", lambda m, ids=ids: ids.get(m[1], "0"), route.path)  # type: ignore[misc]
            for headers in ({}, admin):
                answer = await client.request(route.method, path, headers=headers)
                assert secured(answer) == SECURITY_HEADERS, (route.method, path, answer.status)
    shown = await client.get(f"/v1/packages/{placed.package_id}", headers=admin)
    assert shown.status == 200 and secured(shown) == SECURITY_HEADERS
    assert secured(await client.get("/v1/nothing")) == SECURITY_HEADERS
