"""What the HTTP API tells a caller when something fails: a 5xx says nothing about the
failure but a request id, which the log holds with the real error; a path or query
parameter no id can hold is a 400 before it reaches the database."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.core import Gateway
from gateway.http import create_app
from gateway.http.problems import SERVER_FAULT
from gateway.onboarding import tokens
from tests.helpers import sample_case


@pytest.fixture
async def client(gw: Gateway, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(gw.settings, gateway=gw))


async def bearer(gw: Gateway, role: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + await tokens.create(gw, role, "test", actor="test")}


def break_partner_key(onboarded: Path) -> None:
    """An X25519 key of small order put in a partner's set after onboarding: every
    placement with it fails inside the gateway (a 500, a SealingError)."""
    x = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    (onboarded / "keys/partners/sz-arbitration.jwks.json").write_text(
        json.dumps({"keys": [{"kty": "OKP", "crv": "X25519", "x": x, "use": "enc", "kid": "weak"}]})
    )


PLACEMENT = {
    "case": json.loads(sample_case().read_text()),
    "partner": "sz-arbitration",
    "purpose": "arbitration",
}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [(None, False), ("req-2026.11.20_a1", True), ("<script>", False), ("x" * 200, False)],
    ids=["none", "caller's", "bad characters", "too long"],
)
async def test_a_server_error_says_only_its_request_id_which_the_log_names(
    client: TestClient,
    gw: Gateway,
    onboarded: Path,
    caplog: pytest.LogCaptureFixture,
    sent: str | None,
    kept: bool,
) -> None:
    break_partner_key(onboarded)
    headers = await bearer(gw, "operator")
    if sent is not None:
        headers["X-Request-Id"] = sent
    with caplog.at_level(logging.ERROR, logger="gateway"):
        answer = await client.post("/v1/placements", json=PLACEMENT, headers=headers)
    assert answer.status == 500 and answer.content_type == "application/problem+json"
    request_id = answer.headers["X-Request-Id"]
    assert request_id == sent if kept else re.fullmatch(r"[0-9a-f]{32}", request_id)
    problem = await answer.json()
    assert problem["request_id"] == request_id
    assert problem["detail"] == SERVER_FAULT.format(rid=request_id)
    assert "weak" not in json.dumps(problem) and "encrypt" not in json.dumps(problem)
    [logged] = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert "cannot encrypt package to key weak" in logged and "POST /v1/placements" in logged


async def test_every_answer_carries_a_request_id(client: TestClient) -> None:
    ok = await client.get("/healthz", headers={"X-Request-Id": "probe-1"})
    assert ok.status == 200 and ok.headers["X-Request-Id"] == "probe-1"
    missing = await client.get("/v1/nothing")
    assert missing.status == 404
    assert (await missing.json())["request_id"] == missing.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/partners/a%00b/callbacks",
        "/v1/partners/a%0Ab/callbacks",
        "/v1/partners/%E2%80%AEevil/callbacks",
        "/v1/partners/%FF%FE/callbacks",
        "/v1/partners/" + "a" * 300 + "/callbacks",
    ],
    ids=["NUL", "newline", "bidi override", "not UTF-8", "too long"],
)
async def test_a_path_parameter_no_id_can_hold_is_refused_before_anything_else(
    client: TestClient, path: str
) -> None:
    answer = await client.post(path, data=b"{}", headers={"Content-Type": "application/json"})
    assert answer.status == 400, await answer.text()
    problem = await answer.json()
    assert problem["detail"].startswith("path parameter partner_id: ")
    assert "database" not in problem["detail"]


async def test_a_query_parameter_with_control_characters_is_refused(client: TestClient, gw: Gateway) -> None:
    auditor = await bearer(gw, "auditor")
    answer = await client.get("/v1/audit/entries?partner=a%00b", headers=auditor)
    assert answer.status == 400, await answer.text()
    assert (await answer.json())["detail"].startswith("query parameter partner: ")
    fine = await client.get("/v1/audit/entries?since=2026-01-01T00:00:00%2B08:00", headers=auditor)
    assert fine.status == 200
