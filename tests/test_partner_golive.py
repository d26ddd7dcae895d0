"""`gateway partners test`: the go-live test, from the bank, against a partner's real
endpoint (an agency over TLS that opens what it receives) and the gateway's real
callback route on 127.0.0.1; and the partner kit's Node code against both."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from joserfc.jwk import OKPKey

from gateway.clock import utcnow
from gateway.core import Gateway
from gateway.http import create_app
from gateway.inbound import webhooks
from gateway.onboarding import golive
from gateway.onboarding.kit import write_kit
from gateway.placement import service as placement
from tests.callbacks import CASE, ed25519_headers, signed_headers
from tests.helpers import invoke
from tests.partners import PARTNER, Agency, agency_workspace, rows
from tests.toolchains import NODE_DIR, node_modules

Sign = Callable[[str], dict[str, str]]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Agency, str, str]]:
    """A partner whose agency serves, the gateway's routes on 127.0.0.1 (on the real
    clock: signatures carry real timestamps), and a v1 secret issued to the partner."""
    async with agency_workspace(tmp_path, clock=utcnow) as (gw, agency, _):  # type: ignore[arg-type]
        server = TestServer(create_app(gw.settings, gateway=gw), host="127.0.0.1")
        await server.start_server()
        secret = gw.keys.add_webhook_secret(PARTNER).read_text().split()[-1]
        try:
            yield gw, agency, str(server.make_url(f"/v1/partners/{PARTNER}/callbacks")), secret
        finally:
            await server.close()


async def answer_test_package(agency: Agency, url: str, sign: Sign, event: str = "accepted") -> int:
    """Play the partner: once the test package arrived (opened with the partner's key),
    report on it; return the gateway's answer status."""
    while not any(c.get("test") for c in agency.claims.values()):
        await asyncio.sleep(0.05)
    claims = next(c for c in agency.claims.values() if c.get("test"))
    body = json.dumps({"type": event, "case_ref": claims["case_ref"],
                       "occurred_at": datetime.now(UTC).isoformat()})
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=sign(body)) as answer:
        return answer.status


async def run_test(gw: Gateway, timeout: float = 20) -> tuple[bool, list[golive.Step]]:
    steps: list[golive.Step] = []
    passed = await golive.run(gw, PARTNER, None, timeout=timeout, actor="test", report=steps.append)
    return passed, steps


async def test_a_signed_report_passes(setup: tuple[Gateway, Agency, str, str]) -> None:
    gw, agency, url, secret = setup
    partner = asyncio.create_task(answer_test_package(agency, url, lambda body: signed_headers(secret, body)))
    passed, steps = await run_test(gw)
    assert passed, steps
    assert await partner == 202
    assert [s.name for s in steps] == ["partner", "package", "report"]
    assert "can sign with v1 (1 secret(s))" in steps[0].text
    assert "REF-" in steps[1].text and "'accepted' report on the test package came" in steps[2].text
    (claims,) = agency.claims.values()
    assert claims["test"] is True and claims["data"]["debtor"]["name"] == "Test Debtor (synthetic)"
    audit = await rows(gw, "SELECT leaf FROM audit_entries WHERE kind = 'partner_test' ORDER BY idx")
    assert [json.loads(r["leaf"])["step"] for r in audit] == ["package_sent", "callback", "finished"]
    # A test touches no case: nothing placed, assigned or reported.
    for table in ("packages", "assignments", "events"):
        assert await rows(gw, f"SELECT * FROM {table}") == []


async def test_a_wrong_signature_fails_at_once_saying_why(setup: tuple[Gateway, Agency, str, str]) -> None:
    gw, agency, url, _ = setup
    wrong = "whsec_" + "QUJD" * 11
    partner = asyncio.create_task(answer_test_package(agency, url, lambda body: signed_headers(wrong, body)))
    passed, steps = await run_test(gw, timeout=60)
    assert await partner == 401
    assert not passed
    assert steps[-1].text == (
        "a report came but was refused: 1 v1 signature(s) matched none of the partner's 1 whsec_ secret(s) "
        "(a wrong secret, or other id, timestamp or body bytes than those sent)"
    )
    (state,) = await rows(gw, "SELECT state FROM partner_tests")
    assert state["state"] == "failed"


async def test_no_report_fails_at_the_timeout(setup: tuple[Gateway, Agency, str, str]) -> None:
    gw, agency, url, secret = setup
    passed, steps = await run_test(gw, timeout=1)
    assert not passed and steps[-1].text == "no signed report on the test package within 1 s"
    # A report after the end is refused, and taken nowhere.
    status = await answer_test_package(agency, url, lambda body: signed_headers(secret, body))
    assert status == 409


async def test_an_endpoint_that_refuses_fails_the_package(setup: tuple[Gateway, Agency, str, str]) -> None:
    gw, agency, _, _ = setup
    agency.default = "reject"
    passed, steps = await run_test(gw)
    assert not passed and steps[-1].name == "package"
    assert "did not take the test package" in steps[-1].text and "HTTP 422" in steps[-1].text
    audit = await rows(gw, "SELECT leaf FROM audit_entries WHERE kind = 'partner_test' ORDER BY idx")
    assert json.loads(audit[-1]["leaf"])["outcome"].startswith("failed: the endpoint did not take")


async def test_a_partner_that_cannot_sign_is_told_first(setup: tuple[Gateway, Agency, str, str]) -> None:
    gw, agency, _, _ = setup
    gw.keys.webhook_secret_path(PARTNER).unlink()
    passed, steps = await run_test(gw)
    assert not passed and [s.name for s in steps] == ["partner"]
    assert "cannot sign reports yet" in steps[0].text
    assert agency.requests == {}


async def test_the_command_reports_each_step(setup: tuple[Gateway, Agency, str, str]) -> None:
    gw, agency, url, secret = setup
    partner = asyncio.create_task(answer_test_package(agency, url, lambda body: signed_headers(secret, body)))
    result = await asyncio.to_thread(
        invoke, "-c", gw.settings.base_dir, "partners", "test", PARTNER, "--timeout", "30"
    )
    assert result.exit_code == 0, result.output
    assert await partner == 202
    lines = result.output.splitlines()
    assert lines[0].startswith("ok      partner: ") and lines[1].startswith("ok      package: pkg_")
    assert lines[-1] == f"{PARTNER}: go-live test passed"


async def node(*args: str | Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "node", *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_node_code_of_the_kit_opens_validates_and_reports(
    setup: tuple[Gateway, Agency, str, str], tmp_path: Path
) -> None:
    """The kit of a new partner, used with Node alone: both sample packages opened and
    checked against the kit's schemas, then v1 and v1a reports accepted by the gateway."""
    gw, _, url, secret = setup
    modules = await asyncio.to_thread(node_modules)
    ed_key = _publish_ed25519_key(gw)
    case_ref = (await placement.place(gw, CASE, PARTNER, "collection", actor="test")).case_ref
    kit = tmp_path / "kit"
    await write_kit(gw, PARTNER, kit, "https://gateway.bank.example")
    os.symlink(modules, kit / "code" / "node" / "node_modules")
    (tmp_path / "secret").write_text(secret)
    (tmp_path / "ed.jwk").write_text(json.dumps(ed_key))
    status, out, err = await node(NODE_DIR / "interop.mjs", kit, url, case_ref, tmp_path / "secret",
                                  tmp_path / "ed.jwk")
    assert status == 0, err
    results = json.loads(out)
    assert results["opened"] == ["collection-p256.jwe", "collection-x25519.jwe"]
    assert results["reports"] == [{"scheme": "v1", "status": 202, "state": "active"},
                                  {"scheme": "v1a", "status": 202, "state": "active"}]
    # The kit's Python signer, run as a partner runs it, sends a third report.
    body = tmp_path / "complaint.json"
    body.write_text(json.dumps({"type": "complaint", "case_ref": case_ref, "summary": "by the Python code",
                                "occurred_at": datetime.now(UTC).isoformat()}))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(kit / "code/python/sign_callback.py"), "v1", str(tmp_path / "secret"), str(body),
        url, stdout=asyncio.subprocess.PIPE,
    )
    printed, _ = await process.communicate()
    assert json.loads(printed)[0] == 202
    events = await rows(gw, "SELECT type FROM events ORDER BY id")
    assert [e["type"] for e in events] == ["accepted", "dispute", "complaint"]


def _publish_ed25519_key(gw: Gateway) -> dict[str, Any]:
    """Play the partner adding a v1a signing key to the key set it sent the bank."""
    key = OKPKey.generate_key("Ed25519", private=True)
    key.ensure_kid()
    path = gw.keys.partners / f"{PARTNER}.jwks.json"
    keyset = json.loads(path.read_text())
    keyset["keys"].append({**key.as_dict(private=False), "use": "sig"})
    path.write_text(json.dumps(keyset))
    os.utime(path, (0, uuid.uuid4().int % 10**9))  # a new stamp: the key store reads it again
    return key.as_dict(private=True)




async def test_problems_on_the_callback_path_speak_to_the_partner(
    setup: tuple[Gateway, Agency, str, str],
) -> None:
    """No bank command, file or path in what a partner reads: a secret left for an id
    that is no partner's is answered as an unknown partner; a broken key file of the
    bank's is a fault on the bank's side."""
    gw, _, url, secret = setup
    orphan = gw.keys.add_webhook_secret("gone-partner").read_text().split()[-1]
    body = json.dumps({"type": "accepted", "case_ref": "x", "occurred_at": datetime.now(UTC).isoformat()})
    (gw.keys.partners / f"{PARTNER}.jwks.json").write_text("{not json")
    ed_key = OKPKey.generate_key("Ed25519", private=True).private_key
    async with aiohttp.ClientSession() as session:
        async with session.post(url.replace(PARTNER, "gone-partner"), data=body,
                                headers=signed_headers(orphan, body)) as answer:
            unknown = answer.status, (await answer.json())["detail"]
        async with session.post(url, data=body, headers=ed25519_headers(ed_key, body)) as answer:
            broken = answer.status, (await answer.json())["detail"]
    assert unknown == (401, webhooks.REFUSED)
    assert broken[0] == 500 and broken[1].startswith("internal error, a fault on the gateway's side")
    for detail in (unknown[1], broken[1]):
        assert "`gateway " not in detail and "keys/" not in detail and "partner's" not in detail
