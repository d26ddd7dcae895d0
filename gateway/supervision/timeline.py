"""A case's timeline across partners: assignments, reported events and violations, as
the operator API (``GET /v1/cases/{id}``) and ``gateway cases show`` give it."""

from __future__ import annotations

import json
from typing import Any

from gateway.core import Gateway
from gateway.errors import NotFound
from gateway.placement.service import case_token


async def case_timeline(gw: Gateway, case_id: str) -> dict[str, Any]:
    # Where retention replaced the bank's case id by the case's token, by the token.
    ids = (case_id, case_token(gw, case_id))
    async with gw.db.transaction() as tx:
        assignments = await tx.fetchall(
            "SELECT partner_id, purpose, state, placed_at, accepted_at, recalled_at, recall_reason,"
            " deletion_due, attested_at, timezone"
            " FROM assignments WHERE case_id IN (?, ?) ORDER BY placed_at",
            ids,
        )
        events = await tx.fetchall(
            "SELECT id, partner_id, type, occurred_at, received_at, source, body FROM events"
            " WHERE case_id IN (?, ?) ORDER BY occurred_at, id",
            ids,
        )
        violations = await tx.fetchall(
            "SELECT id, partner_id, rule, source, message, evidence, event_id, at FROM violations"
            " WHERE case_id IN (?, ?) ORDER BY id",
            ids,
        )
    if not assignments:
        raise NotFound(f"no case {case_id!r} has been placed")
    return {
        "case_id": case_id,
        "assignments": assignments,
        "timeline": [{**e, "body": json.loads(e["body"])} for e in events],
        "violations": [{**v, "evidence": json.loads(v["evidence"])} for v in violations],
    }
