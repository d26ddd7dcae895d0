"""Checked and sound (keep it so): properties a security review found in place, pinned
here one test each where no other test held them, so that a change that loses one
fails. Pinned elsewhere already: a redirect is never followed
(test_delivery_agency.py), an encryption key with the wrong use or alg, without a
kid or with a private part is refused (test_onboarding.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from multidict import CIMultiDict

from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.errors import SealingError, Unauthorized
from gateway.http import create_app
from gateway.http.app import ROUTES
from gateway.inbound import webhooks
from gateway.onboarding import tokens
from gateway.onboarding.jwk import generate_encryption_key
from gateway.placement import service as placement
from gateway.placement.seal import choose_encryption_key
from schemas.case import Case
from tests.callbacks import dumps, ed25519_headers, event, signed_headers
from tests.helpers import copy_profile, invoke, sample_case, write_partner_keys
from tests.partners import agency_workspace, place_many

CASE = Case.model_validate_json(sample_case().read_text())


@pytest.fixture
async def client(gw: Gateway, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(gw.settings, gateway=gw))


async def bearer(gw: Gateway, role: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + await tokens.create(gw, role, "test", actor="test")}


# -- secrets are compared in constant time -----------------------------------------------


async def test_tokens_and_webhook_signatures_are_compared_in_constant_time(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[Any, Any]] = []
    constant_time = hmac.compare_digest

    def watched(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(hmac, "compare_digest", watched)
    token = await tokens.create(gw, "operator", "t", actor="t")
    with pytest.raises(Unauthorized):
        await tokens.authenticate(gw, "Bearer " + token[:-4] + "AAAA")
    assert len(compared) == 1, "a token's hash must be compared with hmac.compare_digest"

    compared.clear()
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"type": "accepted"}'
    headers = signed_headers(secret, body.decode())
    signed = webhooks.read(CIMultiDict(headers), now=time.time())
    assert webhooks.verify(signed, body, secrets=[b"k" * 32], public_keys=()) == headers["webhook-id"]
    with pytest.raises(Unauthorized):
        webhooks.verify(signed, body + b" ", secrets=[b"k" * 32], public_keys=())
    assert len(compared) == 2, "a v1 signature must be compared with hmac.compare_digest"


# -- API tokens --------------------------------------------------------------------------


async def test_api_tokens_are_256_random_bits_stored_only_as_a_hash(gw: Gateway) -> None:
    made = [await tokens.create(gw, "auditor", "t", actor="t") for _ in range(2)]
    async with gw.db.transaction() as tx:
        stored = await tx.fetchall("SELECT * FROM api_tokens ORDER BY created_at")
    for token in made:
        token_id, _, secret = token.removeprefix("gwt_").partition("_")
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32
        [row] = [r for r in stored if r["id"] == token_id]
        assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in json.dumps(stored, default=str)
    assert made[0] != made[1]


# -- v1a callbacks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "status"),
    [({"use": "sig"}, 202), ({"use": "enc"}, 401), ({"use": "sig", "crv": "X25519"}, 401)],
    ids=["Ed25519 for signing", "Ed25519 for encryption", "not Ed25519"],
)
async def test_v1a_signatures_verify_only_with_ed25519_keys_published_for_signing(
    gw: Gateway, client: TestClient, onboarded: Path, published: dict[str, str], status: int
) -> None:
    ref = (await placement.place(gw, CASE, "acme-collect", "collection", actor="t")).case_ref
    key = Ed25519PrivateKey.generate()
    x = base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).rstrip(b"=").decode()
    path = onboarded / "keys/partners/acme-collect.jwks.json"
    jwks = json.loads(path.read_text())
    jwks["keys"].append({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "cb", **published})
    path.write_text(json.dumps(jwks))
    body = dumps(event(ref, "accepted"))
    answer = await client.post(
        "/v1/partners/acme-collect/callbacks",
        data=io.BytesIO(body.encode()),
        headers=ed25519_headers(key, body),
    )
    assert answer.status == status, await answer.text()


# -- encryption keys ---------------------------------------------------------------------


def test_a_p256_key_off_its_curve_is_refused_at_onboarding(workspace: Path, tmp_path: Path) -> None:
    write_partner_keys(workspace / "keys", "acme-collect", "P-256")
    path = workspace / "keys/partners/acme-collect.jwks.json"
    [key] = json.loads(path.read_text())["keys"]
    path.write_text(json.dumps({"keys": [{**key, "y": key["x"]}]}))  # (x, x) is not on the curve
    profile = copy_profile("acme-collect.toml", tmp_path)
    result = invoke("-c", workspace, "partners", "add", profile)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"{profile}: jwks:" in result.output and "not on the curve" in result.output


def test_the_key_chosen_is_the_first_one_fit_for_packages() -> None:
    good = generate_encryption_key("P-256").as_dict(private=False)
    unfit = [
        {**good, "use": "sig", "kid": "signing"},
        {**good, "alg": "ECDH-ES", "kid": "other-alg"},
        {k: v for k, v in good.items() if k != "kid"},
        {**generate_encryption_key("P-256").as_dict(private=True), "kid": "private"},
    ]
    assert choose_encryption_key({"keys": [*unfit, good]}).kid == good["kid"]
    with pytest.raises(SealingError, match="no key usable"):
        choose_encryption_key({"keys": unfit})


# -- roles -------------------------------------------------------------------------------

PUBLIC = {
    "/v1/partners/{partner_id}/callbacks",
    "/v1/partners/{partner_id}/callbacks/{format}",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/v1/audit/checkpoint",
    "/v1/audit/tile/{level}/{index}",
}


async def test_every_operator_and_auditor_route_checks_the_caller_and_the_role(
    gw: Gateway, client: TestClient
) -> None:
    # The dashboard's pages take a session, not a bearer token (tests/test_ui.py checks them).
    served = {(r.method, r.resource.canonical) for r in client.app.router.routes()
              if r.resource and not r.resource.canonical.startswith("/ui")}  # fmt: skip
    assert served == {(route.method, route.path) for route in ROUTES}, "a route outside the table"
    assert {route.path for route in ROUTES if not route.roles} == PUBLIC
    by_role = {role: await bearer(gw, role) for role in ("operator", "auditor", "admin")}
    for route in (r for r in ROUTES if r.roles):
        path = re.sub(r"\{\w+\}", "0", route.path)

        async def status(headers: dict[str, str], route: Any = route, path: str = path) -> int:
            return (await client.request(route.method, path, headers=headers)).status

        assert await status({}) == 401, route.path
        assert await status({"Authorization": "Bearer gwt_0123456789ab_nope"}) == 401, route.path
        for role, headers in by_role.items():
            allowed = role == "admin" or role in route.roles
            assert (await status(headers) not in (401, 403)) is allowed, (route.method, route.path, role)


# -- outbound HTTP -----------------------------------------------------------------------


async def test_outbound_http_takes_no_proxy_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy named in the environment would see every package's endpoint and could
    hold or drop them: deliveries go straight to the partner."""
    connections: list[int] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    address = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, address)
        monkeypatch.setenv(name.lower(), address)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        async with agency_workspace(tmp_path) as (gw, agency, _):
            ids = await place_many(gw, 2)
            assert (await Dispatcher(gw).run_once()).delivered == 2
            assert set(agency.effects) == set(ids)
    finally:
        server.close()
        await server.wait_closed()
    assert connections == []
