"""What the fuzz bench (bench/fuzz.py) found, each kept fixed: input no one should send
is refused with a 4xx, never a 500 and an error in the log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from joserfc import jwt
from joserfc.jwk import OctKey

from gateway.core import Gateway
from gateway.http import create_app
from gateway.http.ui import sessions
from gateway.onboarding import tokens
from tests.callbacks import dumps, event, placed_with_secrets, post, signed_headers
from tests.partners import rows
from tests.test_providers import receipts_gateway


@pytest.fixture
async def client(gw: Gateway, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(gw.settings, gateway=gw))


@asynccontextmanager
async def serving(gw: Gateway) -> AsyncIterator[int]:
    """The app as `gateway serve` runs it (aiohttp's test server would instead cancel a
    handler whose client hangs up); its port."""
    runner = web.AppRunner(create_app(gw.settings, gateway=gw), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def raw(port: int, data: bytes, *, hang_up: bool = False) -> bytes:
    """Send ``data`` as it is; the server's status line (or nothing, when hanging up)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return b"" if hang_up else await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_form_token_that_is_not_ascii_is_a_wrong_one(
    gw: Gateway, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """hmac.compare_digest raises TypeError on non-ASCII text: it was a 500 on sign-in
    and on every dashboard action."""
    page = await client.get("/ui/login")
    assert page.status == 200
    token = await tokens.create(gw, "admin", "t", actor="test")
    sign_in = await client.post("/ui/login", data={"token": token, "csrf": "é"}, allow_redirects=False)
    assert sign_in.status == 403
    secret, _ = await sessions.sign_in(gw, token)
    client.session.cookie_jar.update_cookies({sessions.COOKIE: secret})
    action = await client.post("/ui/audit/bundle", data={"csrf": "令牌"}, allow_redirects=False)
    assert action.status == 403
    assert errors(caplog) == []


async def test_a_session_cookie_that_is_not_ascii_is_no_session(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A cookie byte that is not UTF-8 reached the session's hash as a lone surrogate:
    UnicodeEncodeError, a 500."""
    for path in (b"/ui/", b"/ui/logout"):
        head = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nCookie: gw_session=\xff\r\n\r\n"
        answer = await raw(client.port, head)
        assert answer.split()[1] in (b"303", b"405"), answer
    answer = await raw(client.port, b"POST /ui/logout HTTP/1.1\r\nHost: x\r\nCookie: gw_session=\xc3\xa9\r\n"
                       b"Content-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
    assert answer.split()[1] == b"401", answer
    assert errors(caplog) == []


async def wait_for_access_line(caplog: pytest.LogCaptureFixture, path: str) -> int:
    """The status of the first request to ``path`` in the access log, once it is there."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in caplog.records:
            if record.name == "gateway.access" and f" {path} " in record.getMessage():
                return int(record.getMessage().split()[2])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no access line for {path}")


@pytest.mark.parametrize(
    ("path", "route", "media"),
    [("/v1/partners/acme-collect/callbacks", "/v1/partners/{partner_id}/callbacks", "application/json"),
     ("/v1/placements", "/v1/placements", "application/json"),
     ("/ui/login", "/ui/login", "application/x-www-form-urlencoded")],
)  # fmt: skip
async def test_a_client_hanging_up_mid_body_is_a_refusal_not_a_fault(
    gw: Gateway, caplog: pytest.LogCaptureFixture, path: str, route: str, media: str
) -> None:
    """A body cut off by the client raised ConnectionResetError in the handler: a 500
    and an ERROR line per request, an easy way to flood the log."""
    caplog.set_level(logging.INFO)
    token = await tokens.create(gw, "operator", "t", actor="test")
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {media}\r\nContent-Length: 100\r\n"
            f"Authorization: Bearer {token}\r\n\r\n")  # fmt: skip
    async with serving(gw) as port:
        await raw(port, head.encode() + b'{"case', hang_up=True)
        assert await wait_for_access_line(caplog, route) == 400
    assert errors(caplog) == []


async def test_receipt_jwt_claims_no_provider_sends_are_refused(
    tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed with the provider's secret, yet wrong: a non-ASCII payload_hash was a
    TypeError, an iat beyond any float an OverflowError (500s), an iat of NaN passed
    the freshness check, and a message id with a NUL was a 500 on PostgreSQL."""
    async with receipts_gateway(tmp_path, aiohttp_client) as (gw, placed, secret, client):
        body = f'{{"message_uuid": "u-1", "status": "delivered", "client_ref": "{placed.case_ref}"}}'.encode()
        for payload_hash in ("é" * 64, ["not", "text"], hashlib.sha256(body).hexdigest().upper()):
            claims = {"iat": int(gw.now().timestamp()), "payload_hash": payload_hash}
            token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret))
            answer = await client.post("/v1/partners/vonage-sms/callbacks/vonage-messages", data=body,
                                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert answer.status == 401, (payload_hash, await answer.text())
            assert re.search("payload_hash", (await answer.json())["detail"])
        good_hash = hashlib.sha256(body).hexdigest()
        for iat in (10**400, float("nan"), float("inf"), "now", 2**53 + 1):
            claims = {"iat": iat, "payload_hash": good_hash}
            token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret))
            answer = await client.post("/v1/partners/vonage-sms/callbacks/vonage-messages", data=body,
                                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert answer.status == 401, (iat, await answer.text())
            assert "iat" in (await answer.json())["detail"]
        # Authentic, but its message id (the format's, from the receipt) holds a NUL, which
        # PostgreSQL refuses in text (a 500 there), or is longer than any webhook-id may be.
        # And a case_ref with a NUL (a 500 on PostgreSQL, as through the Standard Webhooks route).
        good = placed.case_ref
        bad = [("u-\x00", good), ("u-\n", good), ("u" * 300, good), ("u-2", "c\x00"), ("u-3", "\x00")]
        for uuid, ref in bad:
            sent = json.dumps({"message_uuid": uuid, "status": "delivered", "client_ref": ref,
                               "timestamp": gw.now().isoformat()}).encode()  # fmt: skip
            claims = {"iat": int(gw.now().timestamp()), "payload_hash": hashlib.sha256(sent).hexdigest()}
            token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secret))
            answer = await client.post("/v1/partners/vonage-sms/callbacks/vonage-messages", data=sent,
                                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert answer.status == 422, (uuid, await answer.text())
        assert await rows(gw, "SELECT webhook_id FROM callbacks") == []
    assert errors(caplog) == []


async def test_a_case_ref_with_a_control_character_is_invalid(
    gw: Gateway, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed by the partner, with a NUL in its case_ref: PostgreSQL refused the look-up
    (a 500); now the event is invalid (422) on every backend, and nothing is stored."""
    setup = await placed_with_secrets(gw)
    for ref in ("\x00", setup["agency_ref"] + "\x00", "case_\x1b[2J"):
        body = dumps(event(ref, "accepted"))
        headers = signed_headers(setup["secrets"]["acme-collect"], body)
        answer = await post(client, "acme-collect", body, headers)
        assert answer.status == 422, (ref, await answer.text())
        assert "case_ref" in (await answer.json())["detail"]
    assert await rows(gw, "SELECT webhook_id FROM callbacks") == []
    assert errors(caplog) == []
