"""Real SMS and email providers: the sms_http auth modes against a provider stand-in on
127.0.0.1 that checks the credentials, SMTP AUTH over STARTTLS against aiosmtpd, and the
Vonage delivery receipts through the callback route."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from jwcrypto import jwk, jwt

from gateway.cli.placement import read_case
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery.dispatch import Dispatcher
from gateway.demo.partners import ThrowawayCA
from gateway.errors import ProfileError
from gateway.http.app import create_app
from gateway.onboarding import registry
from gateway.placement import service as placement
from tests.partners import CASE, REPO, Clock, init_workspace, rows

VONAGE = REPO / "examples" / "channels" / "vonage-sms.toml"
MAIL = REPO / "examples" / "partners" / "notify-mail.toml"
SECRET = b"api-secret-0123456789"
#: The example's auth table without its secret_file line, and what replaces it per mode.
BASIC = re.compile(r'mode = "basic"\nusername = .*\n')
MODES = {
    "basic": "",
    "api-key": 'mode = "api-key"\nheader = "Authorization"\nprefix = "Bearer "\n',
    "hmac": 'mode = "hmac"\nkey_id = "k-1"\n',
}


class Provider:
    """An SMS provider's API that checks each request's credentials as the mode says,
    with its own reading of the scheme, and answers 401 when they are wrong."""

    def __init__(self, mode: str, secret: bytes) -> None:
        self.mode, self.secret = mode, secret
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0

    def authentic(self, request: web.Request, body: bytes) -> bool:
        given = request.headers
        if self.mode == "basic":
            expected = "Basic " + base64.b64encode(b"a1b2c3d4:" + self.secret).decode()
            return given.get("Authorization") == expected
        if self.mode == "api-key":
            return given.get("Authorization") == "Bearer " + self.secret.decode()
        stamp = given.get("X-Timestamp", "0")
        digest = hashlib.sha256(body).hexdigest()
        text = f"{stamp}\n{request.method}\n{request.path}\n{digest}".encode()
        mac = hmac.new(self.secret, text, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(stamp)) < 300
        return fresh and given.get("X-Key-Id") == "k-1" and given.get("X-Signature") == f"v1={mac}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.authentic(request, body):
            self.refused += 1
            return web.json_response({"title": "Unauthorized"}, status=401)
        self.accepted.append(json.loads(body))
        n = len(self.accepted)
        if request.path == "/v1/messages":
            return web.json_response({"message_uuid": f"uuid-{n}"}, status=202)
        return web.json_response({"message_id": f"MSG-{n}"}, status=201)


@asynccontextmanager
async def provider_serving(provider: Provider, ca: ThrowawayCA) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/v1/messages", provider.handle)
    app.router.add_post("/messages", provider.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ca.server_context("sms"))
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def write_secret(ws: Path, name: str, secret: bytes, mode: int = 0o600) -> None:
    path = ws / "keys" / "partners" / name
    path.write_bytes(secret + b"\n")
    path.chmod(mode)


def sms_profile(ws: Path, port: int, ca: ThrowawayCA, mode: str) -> Path:
    """The example provider profile, pointed at the stand-in, in auth ``mode``: the
    Vonage shape with Basic (the example as it is), the plain JSON shape otherwise."""
    text = VONAGE.read_text().replace("https://api.nexmo.com", f"https://127.0.0.1:{port}")
    text = text.replace('api = "vonage-messages"', f'ca_file = "{ca.ca_file}"\napi = "vonage-messages"')
    if mode != "basic":
        text = BASIC.sub(MODES[mode], text.replace('api = "vonage-messages"\n', ""), count=1)
    profile = ws / "sms.toml"
    profile.write_text(text)
    return profile


@pytest.mark.parametrize("mode", list(MODES))
async def test_sms_is_sent_with_each_auth_mode(tmp_path: Path, mode: str) -> None:
    ca = ThrowawayCA(tmp_path / "ca")
    provider = Provider(mode, SECRET)
    async with provider_serving(provider, ca) as port:
        ws = init_workspace(tmp_path / "ws")
        write_secret(ws, "vonage-sms.secret", SECRET)
        async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
            await registry.add(gw, sms_profile(ws, port, ca, mode), actor="t")
            placed = await placement.place(gw, read_case(CASE), "vonage-sms", "reminder", actor="t")
            stats = await Dispatcher(gw).run_once()
            [package] = await rows(gw, "SELECT state, partner_ref, last_error FROM packages")
    assert stats.delivered == 1 and provider.refused == 0, package["last_error"]
    [message] = provider.accepted
    if mode == "basic":
        assert message["to"] == "13812341999" and message["from"] == "BANK" and message["channel"] == "sms"
        assert message["client_ref"] == f"{placed.case_ref}:{placed.package_id}"
        assert (package["state"], package["partner_ref"]) == ("delivered", "uuid-1")
    else:
        assert message["template_id"] == "reminder-v1" and message["idempotency_key"] == placed.package_id
        assert (package["state"], package["partner_ref"]) == ("delivered", "MSG-1")
    assert "52310.45 CNY overdue" in message["text"]


async def test_a_wrong_secret_is_refused_by_the_provider_and_the_package_is_dead(tmp_path: Path) -> None:
    ca = ThrowawayCA(tmp_path / "ca")
    provider = Provider("hmac", SECRET)
    async with provider_serving(provider, ca) as port:
        ws = init_workspace(tmp_path / "ws")
        write_secret(ws, "vonage-sms.secret", b"not-the-secret")
        async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
            await registry.add(gw, sms_profile(ws, port, ca, "hmac"), actor="t")
            await placement.place(gw, read_case(CASE), "vonage-sms", "reminder", actor="t")
            await Dispatcher(gw).run_once()
            [package] = await rows(gw, "SELECT state, last_error FROM packages")
    assert provider.refused == 1 and provider.accepted == []
    assert package["state"] == "dead" and "HTTP 401" in package["last_error"]
    assert "not-the-secret" not in package["last_error"]


@pytest.mark.parametrize(
    ("secret", "mode", "problem"),
    [
        (None, 0o600, "vonage-sms.secret is missing"),
        (SECRET, 0o644, "is readable by others (mode 644): chmod 600 it"),
    ],
)
async def test_onboarding_refuses_a_secret_that_is_missing_or_readable_by_others(
    tmp_path: Path, secret: bytes | None, mode: int, problem: str
) -> None:
    ws = init_workspace(tmp_path / "ws")
    if secret is not None:
        write_secret(ws, "vonage-sms.secret", secret, mode)
    async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
        with pytest.raises(ProfileError, match=r"adapter_config: auth.secret_file: .*" + re.escape(problem)):
            await registry.add(gw, sms_profile(ws, 443, ThrowawayCA(tmp_path / "ca"), "basic"), actor="t")


class Relay:
    """An SMTP relay that takes mail only from a logged-in client."""

    def __init__(self) -> None:
        self.logins: list[tuple[bytes, bool]] = []
        self.messages: list[tuple[str, str]] = []

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        ok = (auth_data.login, auth_data.password) == (b"reminders", SECRET)
        self.logins.append((auth_data.login, ok))
        # Not handled here: the server answers 235, or 535 to a wrong password.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append((envelope.mail_from or "", session.authenticated))
        return "250 OK"


@pytest.mark.parametrize("password", [SECRET, b"wrong"])
async def test_smtp_auth_over_starttls(tmp_path: Path, password: bytes) -> None:
    ca = ThrowawayCA(tmp_path / "ca")
    relay = Relay()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(relay, hostname="relay.test", tls_context=ca.server_context("relay"),
                     require_starttls=True, authenticator=relay, auth_require_tls=True),
        "127.0.0.1", 0,
    )
    ws = init_workspace(tmp_path / "ws")
    write_secret(ws, "relay.secret", password)
    text = MAIL.read_text().replace("smtp://127.0.0.1:18025", f"smtp://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    text = text.replace('tls = "starttls"', f'tls = "starttls"\nca_file = "{ca.ca_file}"\n'
                        'auth = { username = "reminders", password_file = "partners/relay.secret" }')
    (ws / "mail.toml").write_text(text)
    try:
        async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
            await registry.add(gw, ws / "mail.toml", actor="t")
            await placement.place(gw, read_case(CASE), "notify-mail", "reminder", actor="t")
            await Dispatcher(gw).run_once()
            [package] = await rows(gw, "SELECT state, last_error FROM packages")
    finally:
        server.close()
    if password == SECRET:
        assert package["state"] == "delivered", package["last_error"]
        assert relay.logins == [(b"reminders", True)]
        assert relay.messages == [("reminders@bank.example", True)]
    else:
        assert package["state"] == "retry_wait" and "the relay refused the login" in package["last_error"]
        assert relay.messages == []


async def test_smtp_auth_without_tls_is_refused_at_onboarding(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    write_secret(ws, "relay.secret", SECRET)
    text = MAIL.read_text().replace(
        'tls = "starttls"',
        'tls = "none"\ninsecure_no_tls = true\n'
        'auth = { username = "reminders", password_file = "partners/relay.secret" }',
    )
    (ws / "mail.toml").write_text(text)
    async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
        with pytest.raises(ProfileError, match="auth needs TLS"):
            await registry.add(gw, ws / "mail.toml", actor="t")


def receipt_token(secret: bytes, body: bytes, iat: float) -> str:
    """What the provider sends: an HS256 JWT over the body's hash, made with jwcrypto."""
    key = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(secret).rstrip(b"=").decode())
    claims = {"iat": int(iat), "jti": "j-1", "iss": "Vonage",
              "payload_hash": hashlib.sha256(body).hexdigest()}
    token = jwt.JWT(header={"alg": "HS256", "typ": "JWT"}, claims=claims)
    token.make_signed_token(key)
    return token.serialize()


@asynccontextmanager
async def receipts_gateway(
    tmp_path: Path, aiohttp_client: Any
) -> AsyncIterator[tuple[Gateway, Any, bytes, Any]]:
    """A workspace with the Vonage SMS provider onboarded, one reminder placed to it, its
    receipts' secret, and a client of the gateway's API."""
    ws = init_workspace(tmp_path / "ws")
    write_secret(ws, "vonage-sms.secret", SECRET)
    async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
        await registry.add(gw, sms_profile(ws, 443, ThrowawayCA(tmp_path / "ca"), "basic"), actor="t")
        placed = await placement.place(gw, read_case(CASE), "vonage-sms", "reminder", actor="t")
        gw.keys.add_webhook_secret("vonage-sms")
        [secret] = gw.keys.webhook_secrets("vonage-sms")
        yield gw, placed, secret, await aiohttp_client(create_app(gw.settings, gateway=gw))


async def test_receipts_are_taken_in_and_forged_ones_refused(tmp_path: Path, aiohttp_client: Any) -> None:
    async with receipts_gateway(tmp_path, aiohttp_client) as (gw, placed, secret, client):

        async def post(receipt: dict[str, Any], key: bytes = secret, body: bytes | None = None) -> Any:
            sent = json.dumps(receipt).encode()
            return await client.post(
                "/v1/partners/vonage-sms/callbacks/vonage-messages", data=body or sent,
                headers={"Authorization": f"Bearer {receipt_token(key, sent, gw.now().timestamp())}",
                         "Content-Type": "application/json"},
            )

        ref = f"{placed.case_ref}:{placed.package_id}"
        base = {"message_uuid": "uuid-1", "to": "13812341999", "client_ref": ref, "channel": "sms",
                "timestamp": gw.now().isoformat()}
        assert (await post({**base, "status": "submitted"})).status == 200  # interim: nothing stored
        delivered = await post({**base, "status": "delivered"})
        assert delivered.status == 202, await delivered.text()
        assert (await post({**base, "status": "delivered"})).status == 409  # the same receipt again
        forged = b"forged-secret-of-thirty-two-bytes"
        assert (await post({**base, "status": "failed"}, key=forged)).status == 401
        tampered = json.dumps({**base, "status": "failed", "client_ref": "case_x:pkg_x"}).encode()
        assert (await post({**base, "status": "failed"}, body=tampered)).status == 401
        failed = await post({**base, "message_uuid": "uuid-2", "status": "undeliverable",
                             "error": {"title": "Undeliverable", "detail": "handset off"}})
        assert failed.status == 202, await failed.text()
        events = await rows(gw, "SELECT type, body FROM events ORDER BY id")
    assert [e["type"] for e in events] == ["message_delivered", "message_failed"]
    assert json.loads(events[0]["body"])["package_id"] == placed.package_id
    assert json.loads(events[1]["body"])["reason"] == "Undeliverable handset off"
