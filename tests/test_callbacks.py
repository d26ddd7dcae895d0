"""Partner callbacks over real HTTP: accepted when signed, refused with the right 4xx
and nothing stored otherwise."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.core import Gateway
from gateway.http import create_app
from tests.callbacks import (
    CASE,
    URL,
    counts,
    dumps,
    ed25519_headers,
    event,
    placed_with_secrets,
    post,
    signed_headers,
)
from tests.helpers import sample_case


@pytest.fixture
async def placed(gw: Gateway) -> dict[str, Any]:
    return await placed_with_secrets(gw)


@pytest.fixture
async def client(gw: Gateway, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(gw.settings, gateway=gw))


async def test_signed_callback_is_accepted_and_on_the_timeline(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    body = dumps(event(placed["agency_ref"], "accepted", partner_reference="ACME-77"))
    resp = await post(client, "acme-collect", body, signed_headers(placed["secrets"]["acme-collect"], body))
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["state"] == "active"
    token = await _token(gw, "operator")
    timeline = await (await client.get(f"/v1/cases/{CASE.case_id}", headers=token)).json()
    assert [e["type"] for e in timeline["timeline"]] == ["accepted"]
    states = {a["partner_id"]: a["state"] for a in timeline["assignments"]}
    assert states == {"acme-collect": "active", "sz-arbitration": "placed"}


async def test_v1a_ed25519_and_rotated_signatures(
    client: TestClient, gw: Gateway, placed: dict[str, Any], onboarded: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes_raw()
    jwks_path = onboarded / "keys/partners/acme-collect.jwks.json"
    jwks = json.loads(jwks_path.read_text())
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    jwks["keys"].append({"kty": "OKP", "crv": "Ed25519", "x": x, "use": "sig", "kid": "cb-1"})
    jwks_path.write_text(json.dumps(jwks))
    body = dumps(event(placed["agency_ref"], "accepted"))
    resp = await post(client, "acme-collect", body, ed25519_headers(key, body))
    assert resp.status == 202, await resp.text()
    # Rotation: an old, no longer valid signature next to a valid new one.
    body = dumps(
        event(
            placed["agency_ref"], "contact_attempt", channel="letter", target="debtor", outcome="left_message"
        )
    )
    headers = signed_headers(placed["secrets"]["acme-collect"], body)
    headers["webhook-signature"] = (
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " + headers["webhook-signature"]
    )
    assert (await post(client, "acme-collect", body, headers)).status == 202


def _stale(h: dict[str, str]) -> None:
    h["webhook-timestamp"] = str(int((datetime.now(UTC) - timedelta(minutes=6)).timestamp()))


def _future(h: dict[str, str]) -> None:
    h["webhook-timestamp"] = str(int((datetime.now(UTC) + timedelta(minutes=6)).timestamp()))


REFUSALS = {
    "wrong signature": (lambda h: h.update({"webhook-signature": "v1,bm9wZQ=="}), 401),
    "missing signature": (lambda h: h.pop("webhook-signature"), 401),
    "stale timestamp": (_stale, 401),
    "future timestamp": (_future, 401),
    "wrong content type": (lambda h: h.update({"content-type": "text/plain"}), 415),
    "unparseable content type": (lambda h: h.update({"content-type": ";0*"}), 415),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
async def test_bad_headers_are_refused_and_nothing_stored(
    case: str, client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    change, status = REFUSALS[case]
    body = dumps(event(placed["agency_ref"], "accepted"))
    headers = signed_headers(placed["secrets"]["acme-collect"], body)
    change(headers)
    resp = await post(client, "acme-collect", body, headers)
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["status"] == status
    assert await counts(gw) == (0, 0)


async def test_replayed_id_is_refused_and_applied_once(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    body = dumps(event(placed["agency_ref"], "accepted"))
    headers = signed_headers(placed["secrets"]["acme-collect"], body, msg_id="msg_once")
    assert (await post(client, "acme-collect", body, headers)).status == 202
    replay = await post(client, "acme-collect", body, headers)
    assert replay.status == 409 and "already received" in (await replay.json())["detail"]
    assert await counts(gw) == (1, 1)


async def test_one_callback_delivered_many_times_at_once_is_applied_once(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    """A partner's retries racing each other (on PostgreSQL, in parallel transactions)."""
    body = dumps(event(placed["agency_ref"], "accepted"))
    headers = signed_headers(placed["secrets"]["acme-collect"], body, msg_id="msg_race")
    answers = await asyncio.gather(*(post(client, "acme-collect", body, headers) for _ in range(8)))
    assert sorted(a.status for a in answers) == [202] + [409] * 7
    assert await counts(gw) == (1, 1)


async def test_unknown_partner_other_partners_case_invalid_and_oversize_bodies(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    secret = placed["secrets"]["acme-collect"]
    body = dumps(event(placed["agency_ref"], "accepted"))
    # Signed with another partner's secret: to an unknown id, as any bad signature.
    assert (await post(client, "nobody", body, signed_headers(secret, body))).status == 401
    other = dumps(event(placed["arbitration_ref"], "accepted"))
    resp = await post(client, "acme-collect", other, signed_headers(secret, other))
    assert resp.status == 403 and "was placed with" in (await resp.json())["detail"]
    invalid = dumps({"type": "accepted", "case_ref": placed["agency_ref"]})
    resp = await post(client, "acme-collect", invalid, signed_headers(secret, invalid))
    assert resp.status == 422 and "occurred_at" in (await resp.json())["detail"]
    future = dumps(event(placed["agency_ref"], "accepted", at=datetime.now(UTC) + timedelta(hours=2)))
    resp = await post(client, "acme-collect", future, signed_headers(secret, future))
    assert resp.status == 422 and "in the future" in (await resp.json())["detail"]
    unknown_type = dumps(event(placed["agency_ref"], "teleported"))
    assert (
        await post(client, "acme-collect", unknown_type, signed_headers(secret, unknown_type))
    ).status == 422
    huge = dumps(event(placed["agency_ref"], "accepted", partner_reference="x" * (1024 * 1024)))
    assert (await post(client, "acme-collect", huge, signed_headers(secret, huge))).status == 413
    assert await counts(gw) == (0, 0)


async def test_impossible_transition_is_refused_and_flagged(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    secret = placed["secrets"]["sz-arbitration"]
    body = dumps(event(placed["arbitration_ref"], "award_issued", summary="too early"))
    resp = await post(client, "sz-arbitration", body, signed_headers(secret, body))
    assert resp.status == 409
    async with gw.db.transaction() as tx:
        flags = await tx.fetchall("SELECT partner_id, rule FROM violations")
    assert flags == [{"partner_id": "sz-arbitration", "rule": "protocol.impossible-transition"}]
    assert await counts(gw) == (0, 1)  # no event; the webhook id, with the flag


async def _token(gw: Gateway, role: str) -> dict[str, str]:
    from gateway.onboarding import tokens

    return {"Authorization": "Bearer " + await tokens.create(gw, role, "test", actor="test")}


async def test_roles(client: TestClient, gw: Gateway, placed: dict[str, Any]) -> None:
    assert (await client.get("/v1/partners")).status == 401
    bad = {"Authorization": "Bearer gwt_nope_nope"}
    assert (await client.get("/v1/partners", headers=bad)).status == 401
    auditor, operator = await _token(gw, "auditor"), await _token(gw, "operator")
    assert (await client.get("/v1/partners", headers=auditor)).status == 200
    assert (await client.get(f"/v1/cases/{CASE.case_id}", headers=auditor)).status == 403
    request = {
        "case": json.loads(sample_case().read_text()),
        "partner": "acme-collect",
        "purpose": "collection",
    }
    assert (await client.post("/v1/placements", json=request, headers=auditor)).status == 403
    resp = await client.post("/v1/placements", json=request, headers=operator)
    assert resp.status == 201
    package = await (
        await client.get(f"/v1/packages/{(await resp.json())['package_id']}", headers=operator)
    ).json()
    assert package["claims"]["aud"] == "acme-collect"
    refused = await client.post("/v1/placements", json={**request, "purpose": "reminder"}, headers=operator)
    assert refused.status == 422 and "does not cover" in (await refused.json())["detail"]


async def test_public_endpoints_and_openapi(client: TestClient, gw: Gateway) -> None:
    from openapi_spec_validator import validate

    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert jwks == gw.keys.public_jwks() and all("d" not in k for k in jwks["keys"])
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    doc = await (await client.get("/openapi.json")).json()
    validate(doc)
    assert {"/v1/placements", "/v1/recalls", "/v1/partners/{partner_id}/callbacks"} <= set(doc["paths"])
    missing = await client.get("/v1/nothing")
    assert missing.status == 404 and missing.content_type == "application/problem+json"


async def test_a_recall_reason_with_personal_data_is_refused_and_nothing_is_recalled(
    client: TestClient, gw: Gateway, placed: dict[str, Any]
) -> None:
    operator = await _token(gw, "operator")
    async with gw.db.transaction() as tx:
        before = await tx.fetchval("SELECT COUNT(*) FROM audit_entries")
    for reason in ("debtor at 138 1234 1999 complained", "asked by zhang.wei@example.com"):
        request = {"case_id": CASE.case_id, "partner": "acme-collect", "reason": reason}
        refused = await client.post("/v1/recalls", json=request, headers=operator)
        assert refused.status == 400, reason
        detail = (await refused.json())["detail"]
        assert "audit log" in detail and "1999" not in detail and "zhang" not in detail
    async with gw.db.transaction() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM audit_entries") == before
        assert await tx.fetchval("SELECT state FROM assignments") != "recalled"
    request["reason"] = "complaint of 2026-11-20 10:30"
    assert (await client.post("/v1/recalls", json=request, headers=operator)).status == 201


async def raw_post(
    port: int, partner: str, body: bytes, headers: dict[str, str], pause: float | None
) -> bytes:
    """POST over a plain socket: the head and half the body, then after ``pause`` the
    rest (None: never, the client stalls); return what the server answered."""
    head = f"POST {URL.format(partner)} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body[: len(body) // 2])
        await writer.drain()
        if pause is not None:
            await asyncio.sleep(pause)
            writer.write(body[len(body) // 2 :])
            await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.readuntil(b"\r\n\r\n")
            length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            return answer + await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


async def serving(app: Any) -> tuple[Any, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def test_a_body_that_arrives_in_pieces_is_read_whole(gw: Gateway, placed: dict[str, Any]) -> None:
    runner, port = await serving(create_app(gw.settings, gateway=gw))
    try:
        body = dumps(event(placed["agency_ref"], "accepted"))
        answer = await raw_post(
            port, "acme-collect", body.encode(), signed_headers(placed["secrets"]["acme-collect"], body), 0.2
        )
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]


async def test_a_stalled_body_is_refused_with_408(gw: Gateway, placed: dict[str, Any]) -> None:
    from gateway.http.appkeys import Timeouts

    runner, port = await serving(create_app(gw.settings, gateway=gw, timeouts=Timeouts(body=0.5)))
    try:
        body = dumps(event(placed["agency_ref"], "accepted"))
        started = asyncio.get_running_loop().time()
        answer = await raw_post(
            port, "acme-collect", body.encode(), signed_headers(placed["secrets"]["acme-collect"], body), None
        )
        waited = asyncio.get_running_loop().time() - started
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within 0.5 s" in answer, answer[:300]
    assert waited < 3
    assert await counts(gw) == (0, 0)
