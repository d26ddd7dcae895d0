"""Test partners for the delivery tests: a faulty agency over real TLS, and workspaces.

The agency opens every package with jwcrypto, a JOSE library independent of the one
the gateway seals with, verifies the bank's signature against the published JWKS, and
counts its *effects* per ``Idempotency-Key``: a resend must not act twice.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from jwcrypto import jwe, jwk, jwt

from gateway.cli.placement import read_case
from gateway.config import CONFIG_NAME, load_settings, render_config
from gateway.core import Gateway
from gateway.demo.partners import ThrowawayCA
from gateway.onboarding import registry
from gateway.onboarding.jwk import generate_encryption_key
from gateway.onboarding.keys import KeyStore
from gateway.placement import service as placement

REPO = Path(__file__).resolve().parents[1]
CASE = REPO / "examples" / "cases" / "case-1001.json"
PARTNER = "acme-test"


class Clock:
    """The gateway's clock, moved by the test instead of by sleeping.

    It starts at 10:00 in Shanghai (the sample debtor's time zone), the latest such moment
    not after now, so reminders are inside the contact hours whenever the tests run.
    """

    def __init__(self) -> None:
        real = datetime.now(UTC)
        local = real.astimezone(ZoneInfo("Asia/Shanghai"))
        start = local.replace(hour=10, minute=0, second=0, microsecond=0)
        self.now = (start if start <= local else start - timedelta(days=1)).astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def to(self, iso: str) -> None:
        self.now = max(self.now, datetime.fromisoformat(iso.replace("Z", "+00:00")))


@dataclass
class Agency:
    """An agency endpoint whose answers a test scripts, one fault per request."""

    private_jwk: dict[str, Any]
    bank_jwks: Path
    script: deque[str] = field(default_factory=deque)
    default: str = "ok"
    delay: float = 0.0
    effects: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 0
    decrypt: bool = True
    """False for volume tests: effects still counted per key, packages left sealed."""
    peers: set[Any] = field(default_factory=set)
    """The client ends (address, port) requests came from: one per TCP connection."""

    def open(self, token: str) -> dict[str, Any]:
        sealed = jwe.JWE()
        sealed.deserialize(token, key=jwk.JWK(**self.private_jwk))
        signed = jwt.JWT(jwt=sealed.payload.decode(), key=jwk.JWKSet.from_json(self.bank_jwks.read_text()))
        return dict(json.loads(signed.claims))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key", "")
        self.requests[key] += 1
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.text()
        mode = self.script.popleft() if self.script else self.default
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow partner, not synchronisation
        if mode == "500":
            return web.Response(status=500, text="internal error")
        if mode.startswith("redirect:"):  # "redirect:URL": 307, which keeps method and body
            return web.Response(status=307, headers={"Location": mode.partition(":")[2]})
        if mode.startswith("429"):
            return web.Response(status=429, headers={"Retry-After": mode.partition(":")[2]})
        if mode == "timeout":
            await asyncio.sleep(5)
        if mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if mode == "reject":
            return web.json_response({"error": "debtor already assigned elsewhere"}, status=422)
        if request.content_type != "application/jose" or not key:
            return web.json_response({"error": "want application/jose and Idempotency-Key"}, status=400)
        claims = self.open(body) if self.decrypt else {"jti": key}
        assert claims["jti"] == key
        if mode == "late500":  # the name where a short excerpt of the answer would cut it
            return web.Response(status=500, text="a" * 297 + claims["data"]["debtor"]["name"] + " failed")
        if mode in ("echo500", "echo422"):  # a partner quoting the case in its error
            data = claims["data"]
            text = (
                f"cannot process {data['debtor']['name']} ({data['loan']['outstanding']} due); "
                "call 138 1234 1999 or write to ops@agency.example"
            )
            return web.Response(status=int(mode[-3:]), text=text)
        if key not in self.claims:
            self.effects[key] += 1
            self.claims[key] = claims
        if mode == "notjson":
            return web.Response(status=201, text="<html>ok</html>")
        if mode == "badschema":
            return web.json_response({"ref": 12, "ok": True}, status=201)
        if mode == "huge":
            return web.Response(status=201, body=b"x" * (2 << 20))
        if mode == "gzipbomb":  # 64 KiB on the wire, 64 MiB once inflated
            bomb = gzip.compress(b"0" * (64 << 20), compresslevel=9)
            return web.Response(status=201, body=bomb, headers={"Content-Encoding": "gzip"})
        return web.json_response({"reference": f"REF-{key[-8:]}"}, status=201)


@asynccontextmanager
async def serve(agency: Agency, tls: ssl.SSLContext | None) -> AsyncIterator[Agency]:
    app = web.Application()
    app.router.add_post("/packages", agency.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", agency.port, ssl_context=tls)
    await site.start()
    agency.port = runner.addresses[0][1]
    try:
        yield agency
    finally:
        await runner.cleanup()


def init_workspace(path: Path) -> Path:
    """What ``gateway init`` does (the database is made when the gateway opens it);
    the CLI itself cannot run inside the test's event loop."""
    path.mkdir(parents=True)
    (path / CONFIG_NAME).write_text(render_config("test-bank", "Test Bank"))
    KeyStore(load_settings(path).keys_dir).generate()
    return path


def agency_profile(
    ws: Path, port: int, ca: ThrowawayCA | None, *, limits: str = "", adapter: str = "",
    partner_id: str = PARTNER,
) -> tuple[Path, dict[str, Any]]:
    """Write an agency profile and its key set; return the profile and the private JWK."""
    key = generate_encryption_key("P-256")
    (ws / "keys" / "partners" / f"{partner_id}.jwks.json").write_text(
        json.dumps({"keys": [key.as_dict(private=False)]})
    )
    ca_line = f'ca_file = "{ca.ca_file}"' if ca else ""
    profile = ws / f"{partner_id}.toml"
    profile.write_text(f"""
id = "{partner_id}"
name = "Test agency"
kind = "agency"
adapter = "agency_http"
endpoint = "https://127.0.0.1:{port}"
jwks = "partners/{partner_id}.jwks.json"

[contract]
number = "T-1"
valid_from = 2020-01-01
valid_to = 2099-12-31
purposes = ["collection"]

[policy.collection]
legal_basis = "test"
[policy.collection.fields]
"debtor.name" = "keep"
"loan.outstanding" = "keep"

[limits]
{limits}

[adapter_config]
{ca_line}
{adapter}
""")
    return profile, key.as_dict(private=True)


async def place_many(gw: Gateway, count: int, partner_id: str = PARTNER) -> list[str]:
    case = read_case(CASE)
    return [
        (await placement.place(gw, case, partner_id, "collection", actor="test")).package_id
        for _ in range(count)
    ]


@asynccontextmanager
async def agency_workspace(
    tmp_path: Path, *, limits: str = "", adapter: str = "", clock: Clock | None = None,
    client_auth: bool = False,
) -> AsyncIterator[tuple[Gateway, Agency, ThrowawayCA]]:
    """A workspace with one agency partner, onboarded, and that agency serving."""
    ws = init_workspace(tmp_path / "ws")
    ca = ThrowawayCA(tmp_path / "ca")
    tls = ca.server_context("agency", require_client_cert=client_auth)
    agency = Agency(private_jwk={}, bank_jwks=ws / "keys" / "bank" / "jwks.json")
    async with serve(agency, tls):
        profile, agency.private_jwk = agency_profile(ws, agency.port, ca, limits=limits, adapter=adapter)
        gw = await Gateway.open(load_settings(ws), clock=clock or Clock())
        try:
            await registry.add(gw, profile, actor="test")
            yield gw, agency, ca
        finally:
            await gw.close()


async def rows(gw: Gateway, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    async with gw.db.transaction() as tx:
        return await tx.fetchall(sql, params)
