"""Putting dead packages back in the outbox after a partner's outage.

A requeued package is the same package: the same id (so the same ``Idempotency-Key``),
the same sealed bytes, the same disclosure entry. It goes back to ``queued``, due now,
and counts its tries again from the attempts it had (``packages.retry_base``); its
attempt rows keep their numbers. The audit log records a ``redelivery`` entry, not a
new disclosure.

Refused, with the reason, and left as they are:

- a package that is not dead (only dead packages go back);
- an expired package (its ``exp`` has passed: the partner would refuse it): place the
  case anew, which makes a new package and a new disclosure;
- a package of a suspended or offboarded partner (reinstate it first);
- a package of a case recalled from that partner.

A recall notice is exempt from the last two: it is the one package such partners must
still receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import InvalidInput
from gateway.placement.service import case_token
from gateway.storage import Row, Transaction
from gateway.supervision.redact import check_reason
from schemas.audit import Redelivery
from schemas.package import RECALL_PURPOSE

#: Most packages one requeue takes (one transaction).
MAX_REQUEUE = 10_000
#: When a package went dead: its last attempt, else (expired or refused before any
#: attempt) when it was placed.
DIED_AT = "COALESCE((SELECT MAX(a.started_at) FROM attempts a WHERE a.package_id = p.id), p.created_at)"


@dataclass(frozen=True)
class Selection:
    """Which packages: by id, or a partner's dead ones (optionally those that went dead
    in ``[since, until)``)."""

    package_ids: tuple[str, ...] = ()
    partner_id: str | None = None
    since: str | None = None
    until: str | None = None

    def check(self) -> None:
        if bool(self.package_ids) == bool(self.partner_id):
            raise InvalidInput("name package ids, or a partner (with --all-dead or --since/--until)")


@dataclass(frozen=True)
class Requeued:
    requeued: list[str]
    refused: dict[str, str]
    """Package id -> why it stays as it is."""


async def requeue(gw: Gateway, selection: Selection, *, actor: str, reason: str = "") -> Requeued:
    """Put the selected dead packages back in the outbox, in one transaction."""
    selection.check()
    if reason:
        check_reason(reason)
    now = isotime(gw.now())
    async with gw.db.transaction() as tx:
        rows = await _select(tx, selection)
        refused: dict[str, str] = {}
        if selection.package_ids:
            found = {r["id"] for r in rows}
            refused = {p: "no such package" for p in selection.package_ids if p not in found}
        done = []
        for row in rows:
            why = await refusal(tx, row, now)
            if why:
                refused[row["id"]] = why
                continue
            await _put_back(tx, row["id"], now)
            done.append(row)
        await gw.record(tx, [_entry(gw, r, now, actor, reason) for r in done])
    return Requeued([r["id"] for r in done], refused)


async def _select(tx: Transaction, selection: Selection) -> list[Row]:
    columns = "p.id, p.partner_id, p.case_id, p.case_ref, p.purpose, p.state, p.expires_at"
    if selection.package_ids:
        marks = ", ".join("?" for _ in selection.package_ids)
        return await tx.fetchall(
            f"SELECT {columns} FROM packages p WHERE p.id IN ({marks}){tx.for_update}",
            selection.package_ids,
        )
    where, params = ["p.partner_id = ?", "p.state = 'dead'"], [selection.partner_id]
    if selection.since:
        where.append(f"{DIED_AT} >= ?")
        params.append(selection.since)
    if selection.until:
        where.append(f"{DIED_AT} < ?")
        params.append(selection.until)
    return await tx.fetchall(
        f"SELECT {columns} FROM packages p WHERE {' AND '.join(where)}"
        f" ORDER BY p.created_at, p.id LIMIT {MAX_REQUEUE}{tx.for_update}",
        params,
    )


async def refusal(tx: Transaction, row: Row, now: str) -> str | None:
    """Why this package may not go back to the outbox, or None."""
    if row["state"] != "dead":
        return f"it is {row['state']}; only dead packages go back to the outbox"
    if row["expires_at"] <= now:
        return (
            f"it expired at {row['expires_at']}: the partner would refuse it; place the case anew "
            "(`gateway place`), which makes a new package"
        )
    if row["purpose"] == RECALL_PURPOSE:
        return None
    partner = await tx.fetchone(
        "SELECT status, status_reason FROM partners WHERE id = ?", (row["partner_id"],)
    )
    if partner is not None and partner["status"] != "active":
        why = partner["status_reason"] or "no reason"
        remedy = "; reinstate it first" if partner["status"] == "suspended" else ""
        return f"partner {row['partner_id']!r} is {partner['status']} ({why}){remedy}"
    assignment = await tx.fetchone(
        "SELECT state, recalled_at FROM assignments WHERE partner_id = ? AND case_ref = ?",
        (row["partner_id"], row["case_ref"]),
    )
    if assignment is not None and assignment["recalled_at"]:
        return f"case {row['case_id']} was recalled from {row['partner_id']!r} ({assignment['recalled_at']})"
    return None


async def _put_back(tx: Transaction, package_id: str, now: str) -> None:
    await tx.execute(
        "UPDATE packages SET state = 'queued', next_attempt_at = ?, retry_base = attempts,"
        " lease_owner = NULL, lease_until = NULL, last_error = NULL WHERE id = ? AND state = 'dead'",
        (now, package_id),
    )


def _entry(gw: Gateway, row: dict[str, Any], now: str, actor: str, reason: str) -> Redelivery:
    return Redelivery(
        at=now,
        actor=actor,
        case=case_token(gw, row["case_id"]),
        package_id=row["id"],
        partner=row["partner_id"],
        reason=reason,
    )
