"""A debtor's recent contacts, by every partner and the gateway's own sends: what
frequency rules count, after a partner's report and before the gateway sends."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from gateway.clock import isotime
from gateway.storage import Transaction
from gateway.supervision.base import Contact

#: How far back contacts are read for frequency rules (7-in-7 needs a week plus a day).
HISTORY = timedelta(days=8)


async def contact_history(
    tx: Transaction, subject: str, since: datetime, until: datetime, exclude: int = 0
) -> list[Contact]:
    """The debtor's contacts from ``since`` to ``until`` by every partner, the gateway's
    own SMS and email included (stored as ``source = 'gateway'`` events, see
    :mod:`gateway.delivery.presend`); ``exclude`` is the event being judged (ids start at 1)."""
    rows = await tx.fetchall(
        "SELECT partner_id, case_id, body FROM events WHERE subject_token = ? AND type = 'contact_attempt'"
        " AND occurred_at >= ? AND occurred_at <= ? AND id != ? ORDER BY occurred_at",
        (subject, isotime(since), isotime(until), exclude),
    )
    return [as_contact(r["partner_id"], r["case_id"], json.loads(r["body"]), subject) for r in rows]


def as_contact(partner_id: str, case_id: str, body: dict[str, Any], subject: str) -> Contact:
    return Contact(
        at=datetime.fromisoformat(body["occurred_at"]),
        channel=body["channel"],
        target=body["target"],
        outcome=body["outcome"],
        partner=partner_id,
        debt=case_id,
        debtor=subject,
        number=body.get("number_token"),
        staff_count=body.get("staff_count"),
        text=body.get("text"),
    )
