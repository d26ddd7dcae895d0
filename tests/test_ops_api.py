"""The API for dashboards and tools, and OpenAPI: every operation documents a response
schema and typed query parameters, and every GET answers what its schema says."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from gateway.audit import log as audit_log
from gateway.core import Gateway
from gateway.http import create_app
from gateway.inbound import pipeline as inbound
from gateway.onboarding import tokens
from gateway.placement import service as placement
from schemas.case import Case
from tests.callbacks import dumps, event
from tests.helpers import sample_case

CASE = Case.model_validate_json(sample_case().read_text())


async def test_every_operation_has_a_response_schema_and_typed_parameters(
    gw: Gateway, aiohttp_client: Any
) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            [success] = [code for code in op["responses"] if code != "default"]
            [(media, content)] = op["responses"][success]["content"].items()
            assert content["schema"], f"{method.upper()} {path} has no response schema"
            for parameter in op["parameters"]:
                assert parameter["schema"].get("type"), (path, parameter["name"])
    query = {p["name"]: p["schema"] for p in doc["paths"]["/v1/deliveries"]["get"]["parameters"]}
    assert query["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert "dead" in query["state"]["enum"]
    entries = {p["name"]: p["schema"]["type"] for p in doc["paths"]["/v1/audit/entries"]["get"]["parameters"]}
    assert entries["start"] == entries["limit"] == "integer" and entries["kind"] == "string"
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics.keys() == {"text/plain; version=0.0.4"}


async def test_every_get_answers_its_schema(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    body = dumps(event(placed.case_ref, "accepted"))
    await inbound.ingest(gw, "acme-collect", body.encode(), channel="callback", webhook_id="m1")
    await audit_log.checkpoint_now(gw.db, gw.audit_signer)
    admin = {"Authorization": f"Bearer {await tokens.create(gw, 'admin', 'test', actor='test')}"}
    doc = await (await client.get("/openapi.json")).json()
    values = {"package_id": placed.package_id, "case_id": CASE.case_id, "partner_id": "acme-collect"}
    values["index"] = "0"
    extra = {"/v1/audit/proofs/consistency": "?old=1", "/v1/attestations": "?overdue=false"}
    checked = []
    for path, operations in doc["paths"].items():
        # Tiles: tests/test_audit_tiles.py; erasures: tests/test_erasure.py.
        if "get" not in operations or "{level}" in path or "{erasure_id}" in path:
            continue
        url = re.sub(r"{(\w+)}", lambda m: values[m[1]], path) + extra.get(path, "")
        answer = await client.get(url, headers=admin)
        assert answer.status == 200, (url, await answer.text())
        content = operations["get"]["responses"]["200"]["content"]
        if "application/json" not in content:
            assert answer.content_type == "text/plain"
            continue
        schema = {**content["application/json"]["schema"], "components": doc["components"]}
        jsonschema.validate(await answer.json(), schema)
        checked.append(path)
    assert len(checked) >= 17


async def test_dashboard_routes_filter_and_refuse_bad_queries(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    await placement.place(gw, CASE, "sz-arbitration", "arbitration", actor="test")
    auditor = {"Authorization": f"Bearer {await tokens.create(gw, 'auditor', 'dash', actor='test')}"}

    async def get(url: str, status: int = 200) -> Any:
        answer = await client.get(url, headers=auditor)
        assert answer.status == status, (url, await answer.text())
        return await answer.json(content_type=None)

    [row] = await get("/v1/deliveries?partner=acme-collect&state=queued&limit=5")
    assert row["id"] == placed.package_id and row["why"] == "due now: waiting for a dispatcher"
    assert len(await get("/v1/deliveries")) == 2
    assert await get("/v1/deliveries?state=dead") == []
    assert "state must be one of" in (await get("/v1/deliveries?state=bogus", 400))["detail"]
    assert "limit must be" in (await get("/v1/deliveries?limit=0", 400))["detail"]
    assert "unknown query parameter" in (await get("/v1/deliveries?partnr=x", 400))["detail"]
    assert {b["partner"] for b in await get("/v1/breakers")} >= {"acme-collect", "sz-arbitration"}
    assert [t["label"] for t in await get("/v1/tokens")] == ["dash"]
    summary = await get("/v1/metrics/summary")
    assert summary["outbox"]["acme-collect"] == {"queued": 1}
    assert summary["partners"]["acme-collect"] == "active" and summary["breakers"]["acme-collect"] == "closed"
    assert summary["audit"]["log_entries"] >= 3 and summary["audit"]["checkpoint_age_seconds"] is None
    assert await get("/v1/attestations?overdue=true") == []
    assert (await client.get("/v1/tokens")).status == 401
