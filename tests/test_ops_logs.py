"""Structured logs of the real processes: a case whose every field holds a canary is
placed (CLI and API), delivered through a partner that quotes it back in an error,
looked up, reported on and polled; the JSON logs of place, dispatch, serve and poll
hold ids and request ids, and not one canary."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from gateway.onboarding import tokens
from tests.callbacks import dumps, signed_headers
from tests.helpers import reap, sample_case
from tests.partners import PARTNER, Clock, agency_workspace, rows
from tests.test_serve import free_port

LIMITS = "rate_per_second = 1000\nbackoff_base = 0.01\nbackoff_cap = 0.01"
CANARIES = {
    "case_id": "CANARYCASE-77",
    "name": "Canaryname 金丝雀",
    "id_number": "CANARYID-4471",
    "phone": "+8613800099977",
    "email": "canary.person@canary-mail.example",
    "street": "Canarystreet 88",
    "city": "Canarytown",
    "kin": "Canarykin 雀",
    "account": "CANARYACCT-6222",
    "doc": "CANARYDOC-1",
    "title": "Canarytitle agreement",
    "outstanding": "98765.43",
}


def canary_case() -> dict[str, Any]:
    case = json.loads(sample_case().read_text())
    c = CANARIES
    case["case_id"] = c["case_id"]
    case["debtor"].update(name=c["name"], id_number=c["id_number"], email=c["email"])
    case["debtor"]["phones"] = [{"number": c["phone"], "label": "mobile"}]
    address = case["debtor"]["address"]
    address.update(province=c["city"], city=c["city"], district=c["city"], line=c["street"])
    address["postcode"] = c["doc"]
    case["emergency_contacts"] = [{"name": c["kin"], "relation": "spouse", "phone": c["phone"]}]
    case["loan"].update(account_number=c["account"], outstanding=c["outstanding"])
    case["evidence"] = [{**case["evidence"][0], "doc_id": c["doc"], "title": c["title"]}]
    return case


async def gateway(ws: Path, *args: str) -> str:
    """Run a command with JSON logs; its stderr (the log)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), *args,
        env={**os.environ, "GATEWAY_LOG_FORMAT": "json"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (args, out.decode(), err.decode())
    return err.decode()


def lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


async def test_no_canary_reaches_the_logs_of_place_dispatch_serve_and_poll(tmp_path: Path) -> None:
    clock = Clock()
    clock.now = datetime.now(UTC)  # the processes run on the real clock
    async with agency_workspace(tmp_path, limits=LIMITS, clock=clock) as (gw, agency, _):
        ws = Path(gw.settings.base_dir)
        config = ws / "gateway.toml"  # every line, deliveries and disclosures too:
        config.write_text('log_level = "debug"\n' + config.read_text())
        case_file = tmp_path / "canary.json"
        case_file.write_text(json.dumps(canary_case(), ensure_ascii=False))
        agency.script.extend(["echo500", "echo500"])  # the partner quotes the case in its errors
        logs = [await gateway(ws, "place", str(case_file), "--partner", PARTNER, "--purpose", "collection")]
        logs.append(await gateway(ws, "dispatch", "--once", "--log-format", "json"))
        await asyncio.sleep(0.1)  # the retry's backoff (10 ms) runs out
        logs.append(await gateway(ws, "dispatch", "--once", "--log-format", "json"))
        assert {r["state"] for r in await rows(gw, "SELECT state FROM packages")} == {"retry_wait"}
        token = await tokens.create(gw, "operator", "test", actor="test")
        secret = gw.keys.add_webhook_secret(PARTNER).read_text().split()[-1]
        logs.append(await _serve(ws, token, secret))
        logs.append(await gateway(ws, "poll"))
        assert agency.effects, "the packages went out"

    text = "\n".join(logs)
    for what, canary in CANARIES.items():
        assert canary.casefold() not in text.casefold(), f"the {what} canary is in the logs"
    parsed = [line for log in logs for line in lines(log)]
    retries = [p for p in parsed if p["msg"].startswith("attempt failed, retrying")]
    assert retries and all(p["partner"] == PARTNER and p["package"].startswith("pkg_") for p in retries)
    assert "<redacted>" in retries[0]["msg"] and "<email>" in retries[0]["msg"]
    access = [p for p in parsed if p["logger"] == "gateway.access"]
    placement = next(p for p in access if p["msg"] == "POST /v1/placements 201")
    assert placement["request_id"] == "req-canary-1" and placement["ms"] >= 0
    assert any(p["msg"] == "GET /v1/cases/{case_id} 200" for p in access)
    refused = [p for p in parsed if p["logger"] == "gateway.callbacks"]
    seen = {(p["status"], p["partner"]) for p in refused}
    assert seen == {(401, "unknown"), (422, PARTNER), (400, "unknown")}
    assert all(p["msg"].startswith("callback refused: ") for p in refused)
    delivered = [p for p in parsed if p["logger"] == "gateway.events" and p["msg"] == "delivered"]
    assert delivered and all(p["package"].startswith("pkg_") for p in delivered)


async def _serve(ws: Path, token: str, secret: str) -> str:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), "serve", "--port", str(port), "--log-format", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        first = ""
        while not first.startswith("serving on"):
            first = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert first, "serve stopped"
        await _requests(f"http://127.0.0.1:{port}", token, secret)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await reap(proc)
    assert proc.returncode == 0, err.decode()
    return err.decode()


async def _requests(base: str, token: str, secret: str) -> None:
    auth = {"Authorization": f"Bearer {token}", "X-Request-Id": "req-canary-1"}
    placement = {"case": canary_case(), "partner": PARTNER, "purpose": "collection"}
    callback = f"{base}/v1/partners/{PARTNER}/callbacks"
    quoted = dumps(
        {"type": "accepted", "case_ref": CANARIES["name"], "occurred_at": "soon " + CANARIES["phone"]}
    )
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/v1/placements", json=placement, headers=auth) as answer:
            assert answer.status == 201, await answer.text()
        async with s.get(f"{base}/v1/cases/{CANARIES['case_id']}", headers=auth) as answer:
            assert answer.status == 200
        unsigned = {"content-type": "application/json"}
        async with s.post(callback, data=io.BytesIO(quoted.encode()), headers=unsigned) as answer:
            assert answer.status == 401
        async with s.post(callback, data=quoted.encode(), headers=signed_headers(secret, quoted)) as answer:
            assert answer.status == 422
        nobody = f"{base}/v1/partners/{CANARIES['name']}/callbacks"
        async with s.post(nobody, data=quoted.encode(), headers=signed_headers(secret, quoted)) as answer:
            assert answer.status == 400  # no partner id can hold a space
        async with asyncio.timeout(30):
            while True:  # the dispatcher of serve delivers the placement
                async with s.get(f"{base}/metrics", headers=auth) as answer:
                    if f'outcome="delivered",partner="{PARTNER}"' in await answer.text():
                        break
                await asyncio.sleep(0.1)
