"""Recall and offboarding: take cases back and demand proof of deletion (PIPL art. 21).

A recall stops every package of the case that is still waiting for that partner, sends
the partner a signed (and for ``jwe`` partners encrypted) recall notice through the same
outbox, so it is retried and deduplicated like any package, and sets the date by which
the partner must attest deletion with a ``deletion_attested`` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import Conflict, NotFound
from gateway.onboarding import registry
from gateway.placement.package import seal_package
from gateway.placement.rows import enqueue
from gateway.storage import Transaction
from gateway.supervision.redact import check_reason
from schemas.audit import PartnerChange, Recall
from schemas.package import RECALL_PURPOSE

OPEN_STATES = ("placed", "active", "ended")


@dataclass(frozen=True)
class Recalled:
    case_id: str
    partner: str
    deletion_due: str
    notice_package_id: str | None


async def recall(gw: Gateway, case_id: str, partner_id: str, reason: str, *, actor: str) -> Recalled:
    check_reason(reason)
    record = await registry.get(gw, partner_id)
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT * FROM assignments WHERE case_id = ? AND partner_id = ?", (case_id, partner_id)
        )
        if not rows:
            raise NotFound(f"case {case_id!r} was never placed with {partner_id!r}")
        open_rows = [r for r in rows if r["state"] in OPEN_STATES]
        if not open_rows:
            raise Conflict(f"case {case_id!r} is already {rows[0]['state']} at {partner_id!r}")
        return await _recall(gw, tx, record, open_rows[0], reason, actor)


@dataclass(frozen=True)
class Offboarded:
    recalled: list[Recalled]
    secrets_removed: list[str]


async def offboard(gw: Gateway, partner_id: str, reason: str, *, actor: str) -> Offboarded:
    """Recall every open case of a partner, remove its webhook secrets (a partner that
    must still attest deletions by callback signs with its Ed25519 key, or is given a new
    secret for that) and close it for good."""
    check_reason(reason)
    record = await registry.get(gw, partner_id)
    if record.status == "offboarded":
        raise Conflict(f"partner {partner_id!r} is already offboarded")
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(
            f"SELECT * FROM assignments WHERE partner_id = ? AND state IN {OPEN_STATES}", (partner_id,)
        )
        done = [await _recall(gw, tx, record, row, reason, actor) for row in rows]
        now = isotime(gw.now())
        await tx.execute(
            "UPDATE partners SET status = 'offboarded', status_reason = ?, updated_at = ? WHERE id = ?",
            (reason, now, partner_id),
        )
        await gw.record(
            tx,
            [
                PartnerChange(
                    kind="partner_suspended",
                    at=now,
                    actor=actor,
                    partner=partner_id,
                    profile_digest=record.profile_digest,
                    reason=f"offboarded: {reason}",
                )
            ],
        )
        removed = await registry.remove_secrets_in(
            gw, tx, partner_id, None, reason=f"offboarded: {reason}", actor=actor
        )
    return Offboarded(done, removed)


async def recall_in(
    gw: Gateway, tx: Transaction, record: registry.PartnerRecord, row: dict[str, Any], reason: str, actor: str
) -> Recalled:
    """Recall the open assignment ``row`` in ``tx`` (an erasure request recalls several)."""
    return await _recall(gw, tx, record, row, reason, actor)


async def _recall(
    gw: Gateway, tx: Transaction, record: registry.PartnerRecord, row: dict[str, Any], reason: str, actor: str
) -> Recalled:
    profile = record.profile
    now = gw.now()
    due = isotime(now + timedelta(days=profile.supervision.deletion_deadline_days))
    await tx.execute(
        "UPDATE packages SET state = 'recalled', last_error = ? WHERE partner_id = ? AND case_id = ?"
        " AND state IN ('queued', 'retry_wait')",
        (f"recalled: {reason}", profile.id, row["case_id"]),
    )
    await tx.execute(
        "UPDATE assignments SET state = 'recalled', recalled_at = ?, recall_reason = ?, deletion_due = ?"
        " WHERE partner_id = ? AND case_ref = ?",
        (isotime(now), reason, due, profile.id, row["case_ref"]),
    )
    notice_id = None
    if profile.sealing != "tls-only":  # a partner that opens packages gets the notice as one
        notice = seal_package(
            gw,
            profile,
            RECALL_PURPOSE,
            row["case_ref"],
            {"recall": {"reason": reason, "deletion_due": due, "attest_with": "deletion_attested"}},
        )
        await enqueue(
            tx,
            notice,
            profile,
            case_id=row["case_id"],
            subject=row["subject_token"],
            fields=[],
            at=isotime(now),
            keyring=gw.keyring,
        )
        notice_id = notice.package_id
    await gw.record(
        tx,
        [
            Recall(
                at=isotime(now),
                actor=actor,
                partner=profile.id,
                case=row["case_token"],
                reason=reason,
                deletion_due=due,
            )
        ],
    )
    return Recalled(row["case_id"], profile.id, due, notice_id)
