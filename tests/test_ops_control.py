"""Control commands over the real CLI and HTTP: tokens listed (never the secret), revoked
and expiring; a case's timeline in the terminal; a callback that suspends its partner
says so."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.config import load_settings
from gateway.core import Gateway
from gateway.http import create_app
from gateway.inbound import pipeline as inbound
from gateway.onboarding import tokens
from gateway.placement import service as placement
from schemas.case import Case
from tests.callbacks import dumps, event, signed_headers
from tests.helpers import invoke, sample_case, workspace_sql

CASE = Case.model_validate_json(sample_case().read_text())


async def test_tokens_list_revoke_and_expire(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    forever = await tokens.create(gw, "operator", "dashboards", actor="test")
    short = await tokens.create(gw, "auditor", "audit firm", actor="test", expires_in=timedelta(days=90))
    listed = {t["id"]: t for t in await tokens.list_tokens(gw)}
    assert set(listed) == {forever.split("_")[1], short.split("_")[1]}
    assert all(forever.split("_", 2)[2] not in json.dumps(t) for t in listed.values())
    assert not any("secret" in key for t in listed.values() for key in t)
    assert listed[short.split("_")[1]]["expires_at"] > listed[short.split("_")[1]]["created_at"]

    def get(token: str) -> Any:
        return client.get("/v1/partners", headers={"Authorization": f"Bearer {token}"})

    assert (await get(forever)).status == 200 and (await get(short)).status == 200
    await tokens.revoke(gw, forever, actor="test")
    answer = await get(forever)
    assert answer.status == 401 and "revoked" in (await answer.json())["detail"]
    async with gw.db.transaction() as tx:
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        await tx.execute("UPDATE api_tokens SET expires_at = ? WHERE id = ?", (past, short.split("_")[1]))
        kinds = [r["kind"] for r in await tx.fetchall("SELECT kind FROM audit_entries ORDER BY idx")]
    answer = await get(short)
    assert answer.status == 401 and "expired" in (await answer.json())["detail"]
    assert kinds[-3:] == ["token_created", "token_created", "token_revoked"]
    assert {t["status"] for t in await tokens.list_tokens(gw)} == {"revoked", "expired"}


def test_tokens_cli(onboarded: Path) -> None:
    created = invoke("-c", onboarded, "tokens", "create", "--role", "auditor", "--expires", "90d")
    token = created.output.strip()
    token_id, secret = token.split("_")[1], token.split("_", 2)[2]
    listed = invoke("-c", onboarded, "tokens", "list")
    assert token_id in listed.output and secret not in listed.output and "active" in listed.output
    revoked = invoke("-c", onboarded, "tokens", "revoke", token)
    assert revoked.exit_code == 0 and f"token {token_id} revoked at " in revoked.output
    again = invoke("-c", onboarded, "tokens", "revoke", token_id)
    assert again.exit_code == 1 and "already revoked" in again.output
    bad = invoke("-c", onboarded, "tokens", "create", "--role", "auditor", "--expires", "soon")
    assert bad.exit_code == 2 and "--expires" in bad.output
    with workspace_sql(onboarded) as sql:
        [row] = sql("SELECT leaf FROM audit_entries WHERE kind = 'token_created'")
    assert json.loads(row["leaf"])["expires_at"].endswith("Z")


def test_cases_show_prints_the_timeline(onboarded: Path) -> None:
    async def report() -> None:
        async with await Gateway.open(load_settings(onboarded)) as gw:
            placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
            at = datetime.now(UTC) - timedelta(hours=1)
            body = dumps(event(placed.case_ref, "accepted", at=at, partner_reference="ACME-77"))
            await inbound.ingest(gw, "acme-collect", body.encode(), channel="callback", webhook_id="msg_1")

    asyncio.run(report())
    shown = invoke("-c", onboarded, "cases", "show", CASE.case_id)
    assert shown.exit_code == 0, shown.output
    assert "acme-collect" in shown.output and "accepted" in shown.output
    assert "partner_reference=ACME-77" in shown.output
    as_json = json.loads(invoke("-c", onboarded, "cases", "show", CASE.case_id, "--json").output)
    assert [e["type"] for e in as_json["timeline"]] == ["accepted"]
    missing = invoke("-c", onboarded, "cases", "show", "C-NOPE")
    assert missing.exit_code == 1 and "no case 'C-NOPE'" in missing.output


async def test_a_callback_that_suspends_its_partner_says_so(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    placed = await placement.place(gw, CASE, "acme-collect", "collection", actor="test")
    secret = gw.keys.add_webhook_secret("acme-collect").read_text().split()[-1]
    night = datetime.now(UTC).replace(hour=15, minute=0)  # 23:00 in Shanghai
    night -= timedelta(days=1)
    answers = []
    reports = [event(placed.case_ref, "accepted", at=night - timedelta(hours=1))] + [
        event(placed.case_ref, "contact_attempt", at=night + timedelta(minutes=n),
              channel="sms", target="debtor", outcome="left_message")
        for n in range(5)
    ]  # fmt: skip
    for report in reports:
        body = dumps(report)
        headers = signed_headers(secret, body)
        resp = await client.post(
            "/v1/partners/acme-collect/callbacks", data=io.BytesIO(body.encode()), headers=headers
        )
        assert resp.status == 202, await resp.text()
        answers.append(await resp.json())
    assert [a["partner_status"] for a in answers] == ["active"] * 5 + ["suspended"]
    assert answers[-1]["violations"] == ["cn.hours"]
