"""Supervision of partners: scorecards, overdue deletion attestations, expiring claims."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.onboarding import registry
from gateway.ops.checks import AWAITING_DELETION, OVERDUE
from gateway.supervision.history import limitation_events


@dataclass(frozen=True)
class Scorecard:
    partner: str
    status: str
    cases: int
    ack_latency_hours: float | None
    """Median time from placement to the partner's acceptance."""
    sla_breaches: int
    """Cases not accepted within the profile's ack_sla_hours (late, or still waiting)."""
    contact_attempts: int
    right_party_contact_rate: float | None
    promise_to_pay_rate: float | None
    promise_kept_rate: float | None
    recovery_rate: float | None
    """Reported payments over the amount placed."""
    complaint_rate: float | None
    violations: int
    violation_rate: float | None
    """Violations per contact attempt."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(part: float, whole: float) -> float | None:
    """``part / whole`` to 4 places; None without a whole, or for a quotient that is no
    finite number (amounts stored before they were bounded), which JSON cannot carry."""
    if not whole:
        return None
    rate = part / whole
    return round(rate, 4) if math.isfinite(rate) else None


async def scorecard(gw: Gateway, partner_id: str) -> Scorecard:
    record = await registry.get(gw, partner_id)
    now = gw.now()
    async with gw.db.transaction() as tx:
        cases = await tx.fetchall(
            "SELECT case_ref, placed_at, accepted_at, amount_placed FROM assignments WHERE partner_id = ?",
            (partner_id,),
        )
        events = await tx.fetchall(
            "SELECT case_ref, type, occurred_at, body FROM events WHERE partner_id = ? ORDER BY occurred_at",
            (partner_id,),
        )
        violations = await tx.fetchval("SELECT COUNT(*) FROM violations WHERE partner_id = ?", (partner_id,))
    sla = timedelta(hours=record.profile.supervision.ack_sla_hours)
    latencies, breaches = [], 0
    for case in cases:
        placed = datetime.fromisoformat(case["placed_at"])
        accepted = datetime.fromisoformat(case["accepted_at"]) if case["accepted_at"] else None
        if accepted:
            latencies.append((accepted - placed).total_seconds() / 3600)
        if (accepted or now) - placed > sla:
            breaches += 1
    bodies = [json.loads(e["body"]) for e in events]
    contacts = [b for b in bodies if b["type"] == "contact_attempt"]
    right_party = [c for c in contacts if c["target"] == "debtor" and c["outcome"] == "connected"]
    promises = [b for b in bodies if b["type"] == "promise_to_pay"]
    payments = [b for b in bodies if b["type"] == "payment_reported"]
    # A promise counts once it is kept or its due date has passed; one still running is
    # neither kept nor broken yet.
    settled = [p for p in promises if _kept(p, payments) or date.fromisoformat(p["due"]) < now.date()]
    kept = sum(1 for p in settled if _kept(p, payments))
    placed_total = sum(Decimal(c["amount_placed"]) for c in cases)
    paid_total = sum((Decimal(p["amount"]) for p in payments), Decimal(0))
    return Scorecard(
        partner=partner_id,
        status=record.status,
        cases=len(cases),
        ack_latency_hours=round(statistics.median(latencies), 2) if latencies else None,
        sla_breaches=breaches,
        contact_attempts=len(contacts),
        right_party_contact_rate=_rate(len(right_party), len(contacts)),
        promise_to_pay_rate=_rate(len({p["case_ref"] for p in promises}), len(cases)),
        promise_kept_rate=_rate(kept, len(settled)),
        recovery_rate=_rate(float(paid_total), float(placed_total)),
        complaint_rate=_rate(sum(1 for b in bodies if b["type"] == "complaint"), len(cases)),
        violations=violations,
        violation_rate=_rate(violations, len(contacts)),
    )


def _kept(promise: dict[str, Any], payments: list[dict[str, Any]]) -> bool:
    """A promise is kept when the case's payments from the promise to its due date
    (end of day) add up to the promised amount."""
    start = datetime.fromisoformat(promise["occurred_at"])
    due = date.fromisoformat(promise["due"])
    paid = sum(
        Decimal(p["amount"])
        for p in payments
        if p["case_ref"] == promise["case_ref"]
        and start <= datetime.fromisoformat(p["occurred_at"])
        and datetime.fromisoformat(p["occurred_at"]).date() <= due
    )
    return paid >= Decimal(promise["amount"])


async def scorecards(gw: Gateway) -> list[Scorecard]:
    return [await scorecard(gw, r.id) for r in await registry.list_all(gw)]


async def violations(gw: Gateway, partner_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    sql = "SELECT id, at, partner_id, case_id, rule, message FROM violations"
    params: tuple[Any, ...] = ()
    if partner_id:
        sql += " WHERE partner_id = ?"
        params = (partner_id,)
    async with gw.db.transaction() as tx:
        return await tx.fetchall(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))


async def overdue_attestations(gw: Gateway, *, overdue_only: bool = True) -> list[dict[str, Any]]:
    sql = (
        "SELECT partner_id, case_id, recalled_at, recall_reason, deletion_due FROM assignments"
        f" WHERE {OVERDUE if overdue_only else AWAITING_DELETION}"
    )
    params: tuple[Any, ...] = ()
    if overdue_only:
        params = (isotime(gw.now()),)
    async with gw.db.transaction() as tx:
        return await tx.fetchall(sql + " ORDER BY deletion_due", params)


async def expiring(gw: Gateway, within: timedelta) -> list[dict[str, Any]]:
    """Cases whose limitation period ends within ``within`` (or has ended), per the rule
    pack, "today" being the date on the debtor's clock. Cases whose proceedings are
    pending have no end yet and are not listed."""
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT case_id, partner_id, timezone, last_due_date, last_reset, limitation_events"
            " FROM assignments"
        )
    by_case: dict[str, dict[str, Any]] = {}
    for row in rows:
        case = by_case.setdefault(
            row["case_id"],
            {"due": row["last_due_date"], "events": set(), "partners": [], "tz": row["timezone"]},
        )
        case["due"] = max(case["due"], row["last_due_date"])
        case["events"].update(limitation_events(row))
        case["partners"].append(row["partner_id"])
    out = []
    for case_id, case in by_case.items():
        today = gw.now().astimezone(ZoneInfo(case["tz"])).date()
        expires = gw.rules.limitation_expires(date.fromisoformat(case["due"]), sorted(case["events"]))
        if expires is not None and expires <= today + within:
            out.append(
                {
                    "case_id": case_id,
                    "expires": str(expires),
                    "days_left": (expires - today).days,
                    "partners": ",".join(sorted(case["partners"])),
                }
            )
    return sorted(out, key=lambda r: r["expires"])
