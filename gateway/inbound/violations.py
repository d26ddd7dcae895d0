"""Violations found on a partner's reports: stored, charged to the partner whose contact
broke the rule, counted toward automatic suspension; and the flag of a report the
case's state does not allow (`gateway.inbound.pipeline`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.clock import isotime
from gateway.onboarding import registry
from gateway.storage import Transaction
from gateway.supervision.rules import Breach
from schemas.audit import PartnerChange, ViolationFound

#: Violations counted for automatic suspension.
SUSPENSION_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Flagged:
    """A report the case's state does not allow: refused (409), flagged for review."""

    refusal: str


async def store_violation(
    tx: Transaction,
    partner_id: str,
    assignment: dict[str, Any],
    breach: Breach,
    event_id: int | None,
    now: datetime,
) -> ViolationFound:
    """Store a violation; return its audit entry for the caller to append.

    A breach of an earlier contact (a late report completed a cap, a late request
    forbade it) is charged to that contact: its partner, its case and its event, with
    the report that revealed it in the evidence."""
    case_id, case_token, evidence = assignment["case_id"], assignment["case_token"], breach.evidence
    contact = breach.contact
    if contact is not None and contact.event is not None and contact.event != event_id:
        partner_id, case_id = contact.partner, contact.debt
        case_token = await tx.fetchval(
            "SELECT case_token FROM assignments WHERE case_id = ? LIMIT 1", (case_id,)
        )
        evidence = {**evidence, "found_on_event": event_id}
        event_id = contact.event
    violation_id = await tx.insert_id(
        "INSERT INTO violations (partner_id, case_id, rule, source, message, evidence, event_id, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            partner_id,
            case_id,
            breach.rule,
            breach.source,
            breach.message,
            json.dumps(evidence, sort_keys=True, default=str),
            event_id,
            isotime(now),
        ),
    )
    return ViolationFound(
        at=isotime(now),
        actor="system",
        partner=partner_id,
        case=case_token,
        rule=breach.rule,
        violation_id=violation_id,
    )


async def maybe_suspend(
    tx: Transaction, record: registry.PartnerRecord, now: datetime, entries: list[Any]
) -> bool:
    """Suspend a partner whose recent violations reach its profile's threshold."""
    # Violations found at the same time by other transactions count once they commit:
    # taking the partner's row lock first makes them take turns here, and the status
    # read with it is the one they left.
    status = await tx.fetchval(f"SELECT status FROM partners WHERE id = ?{tx.for_update}", (record.id,))
    if status != "active":
        return False
    count = await tx.fetchval(
        "SELECT COUNT(*) FROM violations WHERE partner_id = ? AND at >= ?",
        (record.id, isotime(now - SUSPENSION_WINDOW)),
    )
    threshold = record.profile.supervision.violation_threshold
    if count < threshold:
        return False
    reason = f"automatic: {count} violations in 30 days (threshold {threshold})"
    await tx.execute(
        "UPDATE partners SET status = 'suspended', status_reason = ?, updated_at = ? WHERE id = ?",
        (reason, isotime(now), record.id),
    )
    entries.append(
        PartnerChange(
            kind="partner_suspended",
            at=isotime(now),
            actor="system",
            partner=record.id,
            profile_digest=record.profile_digest,
            reason=reason,
        )
    )
    return True


async def flag_transition(
    tx: Transaction,
    entries: list[Any],
    record: registry.PartnerRecord,
    assignment: dict[str, Any],
    event_type: str,
    now: datetime,
) -> Flagged:
    """Flag a report the case's state does not allow: a violation, counted toward
    suspension like any other (each is a report the partner signed)."""
    breach = Breach(
        rule="protocol.impossible-transition",
        source="gateway case lifecycle (gateway/inbound/lifecycle.py)",
        message=f"partner reported {event_type!r} on a case in state {assignment['state']!r}",
        evidence={"state": assignment["state"], "event_type": event_type},
    )
    entries.append(await store_violation(tx, record.id, assignment, breach, None, now))
    await maybe_suspend(tx, record, now, entries)
    return Flagged(
        f"a {event_type!r} report is impossible for a case in state {assignment['state']!r}; "
        "it was refused and flagged for review"
    )
