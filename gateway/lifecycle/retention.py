"""``gateway retention run`` and ``show``: purge the personal data that is due, and say
what is held, how much, and until when.

Which rows are due is decided here from the rules in force
(`gateway.supervision.retention.Schedule`: the rule pack's periods, a partner's own
days); what purging them means is `gateway.lifecycle.purge`'s. A run is one
transaction: its purges, the erasures it moves on, and one audit entry per purge
(counts of each kind, never data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.lifecycle import erasure
from gateway.lifecycle.purge import Counts, purge
from gateway.onboarding import registry
from gateway.supervision.retention import ANCHORS, KINDS, WHAT, Kind, Schedule

#: A package whose case is over at the partner: its deletion attested before the
#: cutoff, or ended (returned, closed, rejected) and placed before the backstop.
_CASE_OVER = (
    "EXISTS (SELECT 1 FROM assignments a WHERE a.partner_id = packages.partner_id"
    " AND a.case_ref = packages.case_ref"
    " AND (a.attested_at <= ? OR (a.state = 'ended' AND a.placed_at <= ?)))"
)


def schedule_of(gw: Gateway) -> Schedule:
    return Schedule(gw.rules.retention.personal, gw.rules.retention.years)


def due(
    kind: Kind, schedule: Schedule, record: registry.PartnerRecord, now: datetime
) -> tuple[str, tuple[Any, ...]]:
    """The rows of ``record``'s partner whose ``kind`` is due at ``now``: a WHERE clause
    on packages, events or (case references) assignments, and its parameters."""
    own = record.profile.retention.model_dump()
    cut = isotime(schedule.cutoff(kind, now, own))
    back = isotime(schedule.backstop(now))
    if kind == "package_sealed":
        plain = isotime(schedule.cutoff("package_plaintext", now, own))
        return f"partner_id = ? AND (expires_at <= ? OR {_CASE_OVER})", (record.id, cut, plain, back)
    if kind == "package_plaintext":
        return f"partner_id = ? AND {_CASE_OVER}", (record.id, cut, back)
    if kind in ("event_original", "event_text"):
        return "partner_id = ? AND received_at <= ?", (record.id, cut)
    over = "(attested_at <= ? OR (state = 'ended' AND placed_at <= ?))"
    return f"partner_id = ? AND {over}", (record.id, cut, back)


@dataclass(frozen=True)
class Run:
    counts: Counts
    entries: list[Any]
    compacted: bool


async def run(gw: Gateway, *, actor: str) -> Run:
    """Purge what is due for every partner, move open erasures on; one transaction."""
    now = gw.now()
    at = isotime(now)
    schedule = schedule_of(gw)
    records = await registry.list_all(gw)
    counts = Counts()
    async with gw.db.transaction() as tx:
        for record in records:
            for kind in KINDS:
                where, params = due(kind, schedule, record, now)
                counts.add(kind, await purge(tx, kind, where, params, at))
        entries: list[Any] = []
        if counts.total():
            entries.append(counts.entry(at=at, actor=actor, trigger="retention"))
        entries += await erasure.advance(gw, tx, at, actor)
        await gw.record(tx, entries)
    compacted = await gw.db.compact() if entries else True
    return Run(counts, entries, compacted)


#: Per kind: the table, the condition of a row that still holds the data, and the
#: moment its period runs from (NULL: not yet, e.g. no attestation).
_HELD: dict[str, tuple[str, str, str]] = {
    "package_sealed": ("packages", "sealed_purged_at IS NULL",
                       "CASE WHEN state IN ('delivered', 'dead', 'recalled') THEN expires_at END"),
    "package_plaintext": ("packages", "plaintext_purged_at IS NULL",
                          "(SELECT a.attested_at FROM assignments a WHERE a.partner_id = packages.partner_id"
                          " AND a.case_ref = packages.case_ref)"),
    "event_original": ("events", "original IS NOT NULL", "received_at"),
    "event_text": ("events", "text_purged_at IS NULL", "received_at"),
    "case_reference": ("assignments", "reference_purged_at IS NULL", "attested_at"),
}


async def show(gw: Gateway) -> list[dict[str, Any]]:
    """Per kind and partner: how much is held, the rule, when the next of it is due, and
    how much waits for its moment (a package not sent yet, a deletion not attested)."""
    schedule = schedule_of(gw)
    records = {r.id: r for r in await registry.list_all(gw)}
    out = []
    async with gw.db.transaction() as tx:
        for kind in KINDS:
            table, held, anchor = _HELD[kind]
            rows = await tx.fetchall(
                f"SELECT partner_id, COUNT(*) AS held, MIN({anchor}) AS first, COUNT({anchor}) AS started"
                f" FROM {table} WHERE {held} GROUP BY partner_id ORDER BY partner_id"
            )
            for row in rows:
                own = records[row["partner_id"]].profile.retention.model_dump()
                out.append(_shown(kind, row, schedule, own))
    return out


def _shown(kind: Kind, row: dict[str, Any], schedule: Schedule, own: dict[str, Any]) -> dict[str, Any]:
    first = row["first"]
    days = timedelta(days=schedule.days(kind, own))
    until = isotime(datetime.fromisoformat(first.replace("Z", "+00:00")) + days) if first else None
    return {
        "kind": kind,
        "partner": row["partner_id"],
        "held": row["held"],
        "next_due": until,
        "waiting": row["held"] - row["started"],
        "waiting_for": ANCHORS[kind],
        "rule": schedule.rule(kind, own),
        "what": WHAT[kind],
    }
