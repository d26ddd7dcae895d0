"""The auditor API over real HTTP: checkpoints, entries and proofs that verify on their own."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp.test_utils import TestClient

from gateway import placement, tokens
from gateway.audit import log as audit_log
from gateway.audit.checkpoint import parse_and_verify
from gateway.audit.merkle import verify_consistency, verify_inclusion
from gateway.audit.signer import origin_for, publish_vkey
from gateway.core import Gateway
from gateway.http import create_app
from schemas.case import Case
from tests.helpers import sample_case


async def test_auditor_reads_checkpoint_entries_and_proofs(gw: Gateway, aiohttp_client: Any) -> None:
    client: TestClient = await aiohttp_client(create_app(gw.settings, gateway=gw))
    auditor = {"Authorization": "Bearer " + await tokens.create(gw, "auditor", "a", actor="t")}
    operator = {"Authorization": "Bearer " + await tokens.create(gw, "operator", "o", actor="t")}
    case = Case.model_validate_json(sample_case().read_text())
    assert (await client.get("/v1/audit/checkpoint", headers=auditor)).status == 404
    old = await audit_log.checkpoint_now(gw)
    await placement.place(gw, case, "acme-collect", "collection", actor="t")
    await audit_log.checkpoint_now(gw)

    assert (await client.get("/v1/audit/checkpoint", headers=operator)).status == 403
    latest = await (await client.get("/v1/audit/checkpoint", headers=auditor)).json()
    vkey = publish_vkey(gw.keys, origin_for(gw.settings.bank_id))
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
