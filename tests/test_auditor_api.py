"""The auditor API over real HTTP: checkpoints, entries and proofs that verify on their own."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient

from gateway.audit import log as audit_log
from gateway.audit.checkpoint import parse_and_verify
from gateway.audit.proofcheck import verify_consistency, verify_inclusion
from gateway.core import Gateway
from gateway.http import create_app
from gateway.onboarding import tokens
from gateway.placement import service as placement
from schemas.case import Case
from tests.helpers import sample_case


async def test_auditor_reads_checkpoint_entries_and_proofs(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    auditor = {"Authorization": "Bearer " + await tokens.create(gw, "auditor", "a", actor="t")}
    operator = {"Authorization": "Bearer " + await tokens.create(gw, "operator", "o", actor="t")}
    case = Case.model_validate_json(sample_case().read_text())
    assert (await client.get("/v1/audit/checkpoint", headers=auditor)).status == 404
    old = await audit_log.checkpoint_now(gw.db, gw.audit_signer)
    await placement.place(gw, case, "acme-collect", "collection", actor="t")
    await audit_log.checkpoint_now(gw.db, gw.audit_signer)

    # The checkpoint is public: the note as text/plain, as JSON on request.
    public = await client.get("/v1/audit/checkpoint")
    assert public.status == 200 and public.content_type == "text/plain"
    latest = await (await client.get("/v1/audit/checkpoint", headers={"Accept": "application/json"})).json()
    assert latest["note"] == await public.text()
    assert (await client.get("/v1/audit/entries", headers=operator)).status == 403
    vkey = gw.audit_signer.vkey
    checkpoint = parse_and_verify(latest["note"], vkey)
    assert checkpoint.size == latest["size"] == old.size + 1

    page = await (await client.get("/v1/audit/entries?kind=disclosure", headers=auditor)).json()
    [entry] = page["entries"]
    proof = await (await client.get(f"/v1/audit/proofs/inclusion/{entry['idx']}", headers=auditor)).json()
    b64 = base64.b64decode
    verify_inclusion(
        b64(proof["leaf_hash"]),
        entry["idx"],
        proof["size"],
        [b64(p) for p in proof["proof"]],
        checkpoint.root,
    )

    cons = await (await client.get(f"/v1/audit/proofs/consistency?old={old.size}", headers=auditor)).json()
    old_root = parse_and_verify(old.note, vkey).root
    verify_consistency(old.size, checkpoint.size, [b64(p) for p in cons["proof"]], old_root, checkpoint.root)

    bad = await client.get("/v1/audit/proofs/inclusion/999", headers=auditor)
    assert bad.status == 422 and bad.content_type == "application/problem+json"
    assert (await client.get("/v1/audit/entries?start=x", headers=auditor)).status == 400


async def test_entries_filter_by_case_id_or_token_and_time_and_refuse_what_they_do_not_take(
    gw: Gateway, aiohttp_client: Any
) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    auditor = {"Authorization": "Bearer " + await tokens.create(gw, "auditor", "a", actor="t")}
    case = Case.model_validate_json(sample_case().read_text())
    await placement.place(gw, case, "acme-collect", "collection", actor="t")
    await placement.place(gw, case, "sz-arbitration", "arbitration", actor="t")

    async def idx(params: str) -> list[int]:
        answer = await client.get(f"/v1/audit/entries?{params}", headers=auditor)
        assert answer.status == 200, await answer.text()
        return [e["idx"] for e in (await answer.json())["entries"]]

    every = (await (await client.get("/v1/audit/entries", headers=auditor)).json())["entries"]
    disclosures = [e for e in every if e["entry"]["kind"] == "disclosure"]
    token = disclosures[0]["entry"]["case"]
    assert await idx(f"case={case.case_id}") == await idx(f"case_token={token}") == [
        e["idx"] for e in disclosures
    ]
    # Any offset, fractions of a second, dates: compared as instants, until exclusive.
    at = datetime.fromisoformat(disclosures[1]["entry"]["at"].replace("Z", "+00:00"))
    shanghai = quote(at.astimezone(timezone(timedelta(hours=8))).isoformat())
    assert (await idx(f"since={shanghai}"))[0] == disclosures[1]["idx"]
    assert (await idx(f"until={shanghai}"))[-1] == disclosures[1]["idx"] - 1
    assert await idx(f"since={every[0]['entry']['at'][:10]}") == [e["idx"] for e in every]
    assert await idx("since=0999-01-01") == [e["idx"] for e in every]  # years < 1000 sort first
    assert await idx("until=0999-01-01") == []

    for params, problem in (
        ("event=disclosure", "unknown query parameter event; this route takes: start, end, partner"),
        ("since=garbage", "since: 'garbage' is not an RFC 3339 date or time"),
        ("start=99999999999999999999999", "start must be an integer from 0 to 2**62"),
        ("start=" + "9" * 5000, "start must be an integer from 0 to 2**62"),
        ("start=%C2%B2", "start must be an integer from 0 to 2**62"),
        ("since=0999-01-01T00:00:00Z&until=x", "until: 'x' is not an RFC 3339 date or time"),
        (f"case={case.case_id}&case_token={token}", "not both"),
        (f"case={token}", "case takes the bank's case id; pass an audit token as case_token"),
    ):
        answer = await client.get(f"/v1/audit/entries?{params}", headers=auditor)
        assert answer.status == 400, params
        assert problem in (await answer.json())["detail"], params
    huge = await client.get("/v1/audit/proofs/consistency?old=0&new=99999999999999999999999", headers=auditor)
    assert huge.status == 400

    spec = await (await client.get("/openapi.json")).json()
    documented = [p["name"] for p in spec["paths"]["/v1/audit/entries"]["get"]["parameters"]]
    assert documented == ["start", "end", "partner", "case", "case_token", "kind", "since", "until", "limit"]
