"""A data subject's erasure request (PIPL art. 47), and legal holds.

``erase`` finds every case placed about the person (the disclosures `gateway audit
subject` lists), recalls each one still open with the reason "data subject request"
(a sealed deletion request through the outbox, as any recall), deletes at once what
the gateway holds of them locally (`gateway.lifecycle.purge`), and records the request.
A case under a legal hold is left as it is, and the request records why it waits.

Each scheduled retention run (`advance`) deletes what became deletable since (recall
notices once sent, reports that came after), and once every partner has attested
deletion and nothing is held, deletes the person's data key and records the erasure
complete. The audit log keeps the disclosures, by pseudonym: who received what stays
provable.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.audit import query
from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import Conflict, NotFound
from gateway.lifecycle.purge import Counts, purge
from gateway.onboarding import registry
from gateway.placement.recall import OPEN_STATES, recall_in
from gateway.placement.service import case_token, person_token
from gateway.storage import Transaction
from gateway.supervision.redact import check_reason
from gateway.supervision.retention import KINDS
from schemas.audit import ErasureCompleted, ErasureRequested, LegalHold, RetentionPurge

REASON = "data subject request"


async def erase(gw: Gateway, id_type: str, id_number: str, reason: str, *, actor: str) -> dict[str, Any]:
    """Record an erasure request about one person and act on it; return its status."""
    check_reason(reason)
    subject = person_token(gw, id_type, id_number)
    disclosures = await query.subject_disclosures(gw.db, subject)
    erasure_id = "era_" + uuid.uuid4().hex
    at = isotime(gw.now())
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT * FROM assignments WHERE subject_token = ? ORDER BY placed_at, partner_id", (subject,)
        )
        if not rows and not disclosures:
            raise NotFound(
                "no case was placed about this person (type and number must be as in the case files)"
            )
        await tx.execute(
            "INSERT INTO erasures (id, subject_token, reason, requested_at, actor) VALUES (?, ?, ?, ?, ?)",
            (erasure_id, subject, reason, at, actor),
        )
        holds = await _holds(tx)
        outcomes = [await _erase_case(gw, tx, erasure_id, row, holds, actor) for row in rows]
        requested = ErasureRequested(
            at=at, actor=actor, cases=len(rows), erasure_id=erasure_id,
            held=outcomes.count("held"), notices=outcomes.count("notice_queued"),
            partners=sorted({row["partner_id"] for row in rows}), reason=reason, subject=subject,
        )
        await gw.record(tx, [requested, *await _purged(tx, subject, at, actor)])
    await gw.db.compact()
    return (await status(gw, erasure_id))[0]


async def _holds(tx: Transaction) -> dict[str, str]:
    rows = await tx.fetchall("SELECT case_token, reason FROM legal_holds")
    return {row["case_token"]: row["reason"] for row in rows}


async def _erase_case(
    gw: Gateway, tx: Transaction, erasure_id: str, row: dict[str, Any], holds: dict[str, str], actor: str
) -> str:
    """Recall one case at one partner for the erasure, unless held; record the outcome."""
    outcome, detail = "attested", ""
    if row["case_token"] in holds:
        outcome, detail = "held", f"legal hold: {holds[row['case_token']]}"
    elif row["state"] in OPEN_STATES:
        record = await registry.fetch(tx, row["partner_id"])
        done = await recall_in(gw, tx, record, row, REASON, actor)
        outcome, detail = (
            ("notice_queued", done.notice_package_id or "")
            if done.notice_package_id
            else ("recalled_without_notice", "tls-only partner: ask it to attest deletion")
        )
    elif row["state"] == "recalled":
        outcome, detail = "awaiting_attestation", f"recalled before: {row['recall_reason']}"
    await tx.execute(
        "INSERT INTO erasure_cases (erasure_id, partner_id, case_ref, case_token, outcome, detail)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (erasure_id, partner_id, case_ref)"
        " DO UPDATE SET outcome = excluded.outcome, detail = excluded.detail",
        (erasure_id, row["partner_id"], row["case_ref"], row["case_token"], outcome, detail),
    )
    return outcome


async def purge_subject(tx: Transaction, subject: str, at: str) -> Counts:
    """Everything about the person the gateway may delete now (see `gateway.lifecycle.purge`)."""
    counts = Counts()
    for kind in KINDS:
        counts.add(kind, await purge(tx, kind, BY_SUBJECT, (subject,), at))
    return counts


async def _purged(tx: Transaction, subject: str, at: str, actor: str) -> list[RetentionPurge]:
    counts = await purge_subject(tx, subject, at)
    if not counts.total():
        return []
    return [counts.entry(at=at, actor=actor, trigger="erasure", subject=subject)]


async def advance(gw: Gateway, tx: Transaction, at: str, actor: str) -> list[Any]:
    """For each open erasure: delete what became deletable, and complete it once every
    partner attested and nothing is held (the person's data key is then deleted too).
    Returns the audit entries."""
    entries: list[Any] = []
    for row in await tx.fetchall("SELECT id, subject_token FROM erasures WHERE completed_at IS NULL"):
        subject = row["subject_token"]
        entries += await _purged(tx, subject, at, actor)
        if await _open_parts(tx, row["id"], subject):
            continue
        await gw.keyring.shred(tx, subject)
        await tx.execute("UPDATE erasures SET completed_at = ? WHERE id = ?", (at, row["id"]))
        entries.append(ErasureCompleted(at=at, actor=actor, erasure_id=row["id"], subject=subject))
    return entries


#: How many of a person's reports still have their original kept.
KEPT_ORIGINALS = "SELECT COUNT(*) FROM events WHERE subject_token = ? AND original IS NOT NULL"
#: Whom an erasure's purges select (`gateway.lifecycle.purge.purge`): the person.
BY_SUBJECT = "subject_token = ?"


async def _open_parts(tx: Transaction, erasure_id: str, subject: str) -> int:
    """What the erasure still waits for: held cases, attestations, data not yet deletable."""
    held = await tx.fetchval(
        "SELECT COUNT(*) FROM erasure_cases WHERE erasure_id = ? AND outcome = 'held'", (erasure_id,)
    )
    unattested = await tx.fetchval(
        "SELECT COUNT(*) FROM assignments WHERE subject_token = ? AND state != 'deleted'", (subject,)
    )
    kept = await tx.fetchval(
        "SELECT COUNT(*) FROM packages WHERE subject_token = ? AND plaintext_purged_at IS NULL", (subject,)
    )
    originals = await tx.fetchval(KEPT_ORIGINALS, (subject,))
    return int(held) + int(unattested) + int(kept) + int(originals)


async def status(gw: Gateway, erasure_id: str | None = None) -> list[dict[str, Any]]:
    """Erasure requests (all, or one) and, per case and partner, where each stands."""
    async with gw.db.transaction() as tx:
        sql = "SELECT id, subject_token, reason, requested_at, actor, completed_at FROM erasures"
        erasures = await tx.fetchall(
            sql + (" WHERE id = ?" if erasure_id else "") + " ORDER BY requested_at, id",
            (erasure_id,) if erasure_id else (),
        )
        if erasure_id and not erasures:
            raise NotFound(f"no erasure request {erasure_id!r} (see `gateway subject status`)")
        return [await _status_of(tx, erasure) for erasure in erasures]


async def _status_of(tx: Transaction, erasure: dict[str, Any]) -> dict[str, Any]:
    cases = await tx.fetchall(
        "SELECT ec.partner_id AS partner, ec.case_token AS case_token, ec.outcome, ec.detail, a.state,"
        " a.deletion_due, a.attested_at FROM erasure_cases ec LEFT JOIN assignments a"
        " ON a.partner_id = ec.partner_id AND a.case_ref = ec.case_ref"
        " WHERE ec.erasure_id = ? ORDER BY ec.partner_id, ec.case_token",
        (erasure["id"],),
    )
    waiting = [
        f"{c['partner']}: " + (c["detail"] if c["outcome"] == "held" else "deletion attestation")
        for c in cases
        if c["outcome"] == "held" or c["attested_at"] is None
    ]
    return {
        "erasure_id": erasure["id"],
        "subject": erasure["subject_token"],
        "reason": erasure["reason"],
        "requested_at": erasure["requested_at"],
        "completed_at": erasure["completed_at"],
        "complete": erasure["completed_at"] is not None,
        "attested": sum(1 for c in cases if c["attested_at"] is not None),
        "cases": cases,
        "waiting_for": waiting,
    }


async def hold(gw: Gateway, case_id: str, reason: str, *, actor: str) -> str:
    """Put a case under a legal hold: nothing of it is purged or erased until released."""
    check_reason(reason)
    token = case_token(gw, case_id)
    at = isotime(gw.now())
    async with gw.db.transaction() as tx:
        await _placed(tx, case_id, token)
        if await tx.fetchval("SELECT COUNT(*) FROM legal_holds WHERE case_token = ?", (token,)):
            raise Conflict(f"case {case_id} is under a legal hold already")
        await tx.execute(
            "INSERT INTO legal_holds (case_token, reason, held_at, actor) VALUES (?, ?, ?, ?)",
            (token, reason, at, actor),
        )
        await gw.record(tx, [LegalHold(at=at, actor=actor, case=token, kind="legal_hold", reason=reason)])
    return token


async def release(gw: Gateway, case_id: str, reason: str, *, actor: str) -> list[str]:
    """Lift a case's legal hold; erasures that waited for it go on at once (recalls,
    local deletion). Returns the ids of those erasures."""
    check_reason(reason)
    token = case_token(gw, case_id)
    at = isotime(gw.now())
    async with gw.db.transaction() as tx:
        if not await tx.execute("DELETE FROM legal_holds WHERE case_token = ?", (token,)):
            raise NotFound(f"case {case_id} is not under a legal hold (see `gateway cases holds`)")
        entries: list[Any] = [
            LegalHold(at=at, actor=actor, case=token, kind="legal_hold_released", reason=reason)
        ]
        resumed = await _resume(gw, tx, token, at, actor, entries)
        await gw.record(tx, entries)
    return resumed


async def _resume(
    gw: Gateway, tx: Transaction, token: str, at: str, actor: str, entries: list[Any]
) -> list[str]:
    waiting = await tx.fetchall(
        "SELECT ec.erasure_id, e.subject_token FROM erasure_cases ec JOIN erasures e ON e.id = ec.erasure_id"
        " WHERE ec.case_token = ? AND ec.outcome = 'held' AND e.completed_at IS NULL",
        (token,),
    )
    holds = await _holds(tx)
    for item in waiting:
        rows = await tx.fetchall(
            "SELECT * FROM assignments WHERE case_token = ? AND subject_token = ?",
            (token, item["subject_token"]),
        )
        for row in rows:
            await _erase_case(gw, tx, item["erasure_id"], row, holds, actor)
        entries += await _purged(tx, item["subject_token"], at, actor)
    return sorted({item["erasure_id"] for item in waiting})


async def _placed(tx: Transaction, case_id: str, token: str) -> None:
    if not await tx.fetchval("SELECT COUNT(*) FROM assignments WHERE case_token = ?", (token,)):
        raise NotFound(f"case {case_id} was never placed (see `gateway package list`)")


async def holds(gw: Gateway) -> list[dict[str, Any]]:
    async with gw.db.transaction() as tx:
        return await tx.fetchall(
            "SELECT case_token, reason, held_at, actor FROM legal_holds ORDER BY held_at, case_token"
        )
