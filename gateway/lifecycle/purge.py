"""What purging each kind of personal data does: the one place that deletes it.

Callers choose *which* rows (``where`` and its parameters: a retention rule's due
rows, or everything about one person for an erasure); these functions decide what
deleting a kind means and what is always kept:

- nothing of a package that may still be sent (only ``delivered``, ``dead`` and
  ``recalled`` ones), and nothing of a case under a legal hold;
- a package's sealed form goes first: its plaintext never outlives it;
- what proofs and scorecards rest on stays: digests, event types, times, amounts,
  states, violations, and the audit log (which holds tokens only).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.lifecycle.screen import PURGED, free_text, replaced
from gateway.storage import Transaction
from gateway.supervision.retention import KINDS, Kind
from schemas.audit import RetentionPurge

FINAL = "('delivered', 'dead', 'recalled')"
#: Rows (of packages, events) of no case under a legal hold.
NOT_HELD = (
    "case_id NOT IN (SELECT a.case_id FROM assignments a JOIN legal_holds h ON h.case_token = a.case_token)"
)


@dataclass
class Counts:
    """How many of each kind were purged."""

    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def add(self, kind: str, count: int) -> None:
        self.by_kind[kind] += count

    def total(self) -> int:
        return sum(self.by_kind.values())

    def entry(
        self, *, at: str, actor: str, trigger: Literal["retention", "erasure"], subject: str | None = None
    ) -> RetentionPurge:
        """The audit entry of these purges: counts, never data."""
        k = self.by_kind
        return RetentionPurge(
            at=at,
            actor=actor,
            trigger=trigger,
            subject=subject,
            package_sealed=k["package_sealed"],
            package_plaintexts=k["package_plaintext"],
            event_originals=k["event_original"],
            event_texts=k["event_text"],
            case_references=k["case_reference"],
        )


async def purge(tx: Transaction, kind: Kind, where: str, params: Sequence[Any], now: str) -> int:
    """Purge ``kind`` from the rows ``where`` selects (on packages, events or, for case
    references, assignments); return how many."""
    return await _PURGES[kind](tx, where, params, now)


async def _sealed(tx: Transaction, where: str, params: Sequence[Any], now: str) -> int:
    return await _bodies(
        tx, "sealed", "sealed_purged_at", f"state IN {FINAL} AND {NOT_HELD} AND ({where})", params, now
    )


async def _plaintext(tx: Transaction, where: str, params: Sequence[Any], now: str) -> int:
    return await _bodies(
        tx,
        "signed",
        "plaintext_purged_at",
        f"sealed_purged_at IS NOT NULL AND state IN {FINAL} AND {NOT_HELD} AND ({where})",
        params,
        now,
    )


async def _bodies(
    tx: Transaction, column: str, stamp: str, chosen: str, params: Sequence[Any], now: str
) -> int:
    """Blank ``column`` of the bodies (`package_bodies`) of the packages ``chosen`` selects
    that still hold it, and note when in the package's ``stamp``; return how many."""
    purged = await tx.fetchall(
        f"UPDATE packages SET {stamp} = ? WHERE {stamp} IS NULL AND {chosen} RETURNING id", (now, *params)
    )
    await tx.executemany(
        f"UPDATE package_bodies SET {column} = '' WHERE package_id = ?", [(r["id"],) for r in purged]
    )
    return len(purged)


def originals_statement(where: str) -> str:
    """Blanks the kept originals of the reports ``where`` selects; its parameters: the
    time, then ``where``'s."""
    return (
        f"UPDATE events SET original = NULL, original_purged_at = ? WHERE original IS NOT NULL AND {NOT_HELD}"
        f" AND ({where})"
    )


def texts_statement(where: str) -> str:
    """The reports ``where`` selects whose free text is not purged yet."""
    return f"SELECT id, body FROM events WHERE text_purged_at IS NULL AND {NOT_HELD} AND ({where})"


async def _originals(tx: Transaction, where: str, params: Sequence[Any], now: str) -> int:
    return await tx.execute(originals_statement(where), (now, *params))


async def _texts(tx: Transaction, where: str, params: Sequence[Any], now: str) -> int:
    """Free text replaced by a mark; the rest of the report (type, times, amounts) stays."""
    rows = await tx.fetchall(texts_statement(where), params)
    count = 0
    for row in rows:
        body = json.loads(row["body"])
        if free_text(body):
            count += 1
            text = json.dumps(replaced(body, lambda _: PURGED), ensure_ascii=False, separators=(",", ":"))
            await tx.execute(
                "UPDATE events SET body = ?, text_purged_at = ? WHERE id = ?", (text, now, row["id"])
            )
        else:
            await tx.execute("UPDATE events SET text_purged_at = ? WHERE id = ?", (now, row["id"]))
    return count


async def _references(tx: Transaction, where: str, params: Sequence[Any], now: str) -> int:
    """The bank's case id replaced by the case's audit token, wherever it is stored: the
    records stay together, and `gateway audit log --case` still finds them by the id."""
    rows = await tx.fetchall(
        "SELECT partner_id, case_ref, case_id, case_token FROM assignments WHERE reference_purged_at IS NULL"
        f" AND case_token NOT IN (SELECT case_token FROM legal_holds) AND ({where})",
        params,
    )
    for row in rows:
        token, partner, ref = row["case_token"], row["partner_id"], row["case_ref"]
        for table in ("packages", "events"):
            await tx.execute(
                f"UPDATE {table} SET case_id = ? WHERE partner_id = ? AND case_ref = ?", (token, partner, ref)
            )
        await tx.execute(
            "UPDATE violations SET case_id = ? WHERE partner_id = ? AND case_id = ?",
            (token, partner, row["case_id"]),
        )
        await tx.execute(
            "UPDATE assignments SET case_id = ?, reference_purged_at = ?"
            " WHERE partner_id = ? AND case_ref = ?",
            (token, now, partner, ref),
        )
    return len(rows)


_PURGES = {
    "package_sealed": _sealed,
    "package_plaintext": _plaintext,
    "event_original": _originals,
    "event_text": _texts,
    "case_reference": _references,
}
