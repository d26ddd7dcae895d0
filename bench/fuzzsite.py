"""The gateway the fuzz bench attacks: a fresh workspace with the sample partners
onboarded (an agency, an arbitration body, an email and an SMS provider, and a Vonage
SMS provider whose receipts come in a plugin's callback format), cases placed with
them, webhook secrets and API tokens issued, and `gateway serve` running it as a
process of its own on 127.0.0.1, its log in a file."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from click.testing import CliRunner

from bench.fuzztarget import Target
from gateway.cli.main import cli
from gateway.cli.placement import read_case
from gateway.config import load_settings
from gateway.core import Gateway
from gateway.http.app import ROUTES
from gateway.onboarding import registry, tokens
from gateway.onboarding.jwk import generate_encryption_key
from gateway.placement import service as placement

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
KEY_CURVES = {"acme-collect": "P-256", "sz-arbitration": "X25519"}
PLACED = [("acme-collect", "collection"), ("sz-arbitration", "arbitration"), ("vonage-sms", "reminder")]


@dataclass
class Served:
    port: int
    pid: int
    log: Path


def cli_ok(*args: str | Path) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"gateway {args[0]}: {result.output}")


def build_workspace(root: Path) -> Path:
    """``gateway init`` and ``partners add`` of every sample partner, as an operator
    would. No checkpoint timer: every row the fuzzing adds is a request's."""
    ws = root / "ws"
    cli_ok("init", ws)
    config = ws / "gateway.toml"
    config.write_text(re.sub(r"(?m)^audit_checkpoint_seconds = \d+", "audit_checkpoint_seconds = 0",
                             config.read_text()))  # fmt: skip
    for partner, crv in KEY_CURVES.items():
        key = generate_encryption_key(crv)
        (ws / "keys" / "partners" / f"{partner}.jwks.json").write_text(
            json.dumps({"keys": [key.as_dict(private=False)]})
        )
    secret = ws / "keys" / "partners" / "vonage-sms.secret"
    secret.write_bytes(b"api-secret-0123456789\n")
    secret.chmod(0o600)
    vonage = root / "vonage-sms.toml"  # sent to nowhere: serve runs without the dispatcher
    vonage.write_text((EXAMPLES / "channels" / "vonage-sms.toml").read_text()
                      .replace("https://api.nexmo.com", "https://127.0.0.1:9"))  # fmt: skip
    for profile in [*sorted((EXAMPLES / "partners").glob("*.toml")), vonage]:
        cli_ok("-c", ws, "partners", "add", profile)
    return ws


async def prepare(ws: Path, cases: int) -> dict[str, Any]:
    """Place ``cases`` cases with each partner that takes reports, issue a webhook
    secret to each partner and a token per role."""
    base = read_case(EXAMPLES / "cases" / "case-1001.json")
    found: dict[str, Any] = {"case_refs": {}, "case_ids": [], "package_ids": [], "secrets": {}, "tokens": {}}
    async with await Gateway.open(load_settings(ws)) as gw:
        for i in range(cases):
            case = base.model_copy(update={"case_id": f"C-FUZZ-{i:04d}"})
            for partner, purpose in PLACED:
                placed = await placement.place(gw, case, partner, purpose, actor="fuzz")
                found["case_refs"].setdefault(partner, []).append(placed.case_ref)
                found["package_ids"].append(placed.package_id)
            found["case_ids"].append(case.case_id)
        for record in await registry.list_all(gw):
            await registry.add_webhook_secret(gw, record.profile.id, actor="fuzz")
            found["secrets"][record.profile.id] = gw.keys.webhook_secrets(record.profile.id)[-1]
        for role in tokens.ROLES:
            found["tokens"][role] = await tokens.create(gw, role, "fuzz", actor="fuzz")
    return found


@contextmanager
def serving(ws: Path, log: Path):  # type: ignore[no-untyped-def]
    """`gateway serve --no-workers` on a free port of 127.0.0.1; stopped with SIGTERM,
    which it must obey within 30 s."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "-c", str(ws), "serve", "--port", "0", "--no-workers"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(rb"serving on http://127\.0\.0\.1:(\d+)", log.read_bytes())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway serve did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield Served(int(found[1]), proc.pid, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise SystemExit("gateway serve did not stop within 30 s of SIGTERM") from None


async def sign_in(base: str, token: str) -> str:
    """A dashboard session, signed in as a user would: the form's CSRF token, then the token."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{base}/ui/login") as page:
            html = await page.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', html)
        assert csrf, "no CSRF field on the sign-in page"
        form = {"csrf": csrf[1], "token": token, "next": "/ui/"}
        async with session.post(f"{base}/ui/login", data=form, allow_redirects=False) as answer:
            assert answer.status == 303, f"sign-in answered {answer.status}"
            return answer.cookies["gw_session"].value


async def target(port: int, found: dict[str, Any]) -> Target:
    """What the fuzzer needs: the live /openapi.json, ids, secrets, tokens, a session."""
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session, session.get(f"{base}/openapi.json") as answer:
        document = await answer.json()
    roles = {(r.method, r.path): r.roles for r in ROUTES}
    routes = [
        (m.upper(), path, roles[(m.upper(), path)]) for path, ops in document["paths"].items() for m in ops
    ]
    secrets = found["secrets"]
    return Target(
        document=document, routes=routes,
        secrets={p: s for p, s in secrets.items() if p != "vonage-sms"},
        receipts={"vonage-sms": ("vonage-messages", secrets["vonage-sms"])},
        tokens=found["tokens"], case_refs=found["case_refs"], case_ids=found["case_ids"],
        package_ids=found["package_ids"], partners=sorted(secrets),
        session=await sign_in(base, found["tokens"]["admin"]),
        real_case=json.loads((EXAMPLES / "cases" / "case-1001.json").read_text()),
    )  # fmt: skip
