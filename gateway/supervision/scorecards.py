"""Supervision of partners: scorecards, overdue deletion attestations, expiring claims."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.onboarding import registry
from gateway.ops.checks import AWAITING_DELETION, OVERDUE
from gateway.supervision.history import limitation_events
from schemas.ops import Scorecard

#: Weeks of scorecard history the dashboard charts.
WEEKS = 12


def _rate(part: float, whole: float) -> float | None:
    """``part / whole`` to 4 places; None without a whole, or for a quotient that is no
    finite number (amounts stored before they were bounded), which JSON cannot carry."""
    if not whole:
        return None
    rate = part / whole
    return round(rate, 4) if math.isfinite(rate) else None


async def scorecard(gw: Gateway, partner_id: str) -> Scorecard:
    record, cases, events, violation_times = await _inputs(gw, partner_id)
    return _card(record, cases, events, len(violation_times), gw.now())


async def history(gw: Gateway, partner_id: str, weeks: int = WEEKS) -> list[tuple[date, Scorecard]]:
    """The scorecard as it stood at the end of each of the last ``weeks`` weeks (Monday
    to Sunday, UTC; the current week up to now): the same figures as `scorecard`, from
    the cases placed, events that occurred and violations found by then."""
    record, cases, events, violation_times = await _inputs(gw, partner_id)
    now = gw.now()
    out = []
    for start in week_starts(now, weeks):
        end = min(datetime.combine(start + timedelta(days=7), time(), UTC), now)
        known = [_as_of(c, end) for c in cases if _at(c["placed_at"]) < end]
        happened = [e for e in events if _at(e["occurred_at"]) < end]
        found = sum(1 for at in violation_times if _at(at) < end)
        out.append((start, _card(record, known, happened, found, end)))
    return out


def week_starts(now: datetime, weeks: int) -> list[date]:
    """The Mondays (UTC) of the last ``weeks`` weeks, oldest first, this week's last."""
    monday = now.astimezone(UTC).date() - timedelta(days=now.astimezone(UTC).weekday())
    return [monday - timedelta(weeks=n) for n in range(weeks - 1, -1, -1)]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _as_of(case: dict[str, Any], end: datetime) -> dict[str, Any]:
    """A case as it stood at ``end``: not yet accepted if acceptance came later."""
    if case["accepted_at"] and _at(case["accepted_at"]) >= end:
        return {**case, "accepted_at": None}
    return case


async def _inputs(
    gw: Gateway, partner_id: str
) -> tuple[registry.PartnerRecord, list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The partner, its cases, its events (oldest first) and when its violations were found."""
    record = await registry.get(gw, partner_id)
    async with gw.db.transaction() as tx:
        cases = await tx.fetchall(
            "SELECT case_ref, placed_at, accepted_at, amount_placed FROM assignments WHERE partner_id = ?",
            (partner_id,),
        )
        events = await tx.fetchall(
            "SELECT case_ref, type, occurred_at, body FROM events WHERE partner_id = ? ORDER BY occurred_at",
            (partner_id,),
        )
        found = await tx.fetchall("SELECT at FROM violations WHERE partner_id = ?", (partner_id,))
    return record, cases, events, [r["at"] for r in found]


def _card(
    record: registry.PartnerRecord,
    cases: list[dict[str, Any]],
    events: list[dict[str, Any]],
    violations: int,
    now: datetime,
) -> Scorecard:
    """The one definition of every scorecard figure, over the rows given, at ``now``."""
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
        partner=record.id,
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


@dataclass(frozen=True)
class ViolationFilter:
    """Which violations: by partner, rule, and when found (``[since, until)``, RFC 3339)."""

    partner: str | None = None
    rule: str | None = None
    since: str | None = None
    until: str | None = None

    def where(self) -> tuple[str, tuple[Any, ...]]:
        clauses = [("partner_id = ?", self.partner), ("rule = ?", self.rule),
                   ("at >= ?", self.since), ("at < ?", self.until)]  # fmt: skip
        kept = [(sql, value) for sql, value in clauses if value]
        if not kept:
            return "", ()
        return " WHERE " + " AND ".join(sql for sql, _ in kept), tuple(v for _, v in kept)


async def violations(
    gw: Gateway,
    partner_id: str | None = None,
    limit: int = 100,
    *,
    where: ViolationFilter | None = None,
    detail: bool = False,
) -> list[dict[str, Any]]:
    """Violations, newest first; with ``detail``, also the rule's source and the evidence
    (for those who may read a case's timeline)."""
    where = where or ViolationFilter(partner=partner_id)
    sql, params = where.where()
    columns = "id, at, partner_id, case_id, rule, message" + (", source, evidence" if detail else "")
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(f"SELECT {columns} FROM violations{sql} ORDER BY id DESC LIMIT ?",
                                 (*params, limit))  # fmt: skip
    if detail:
        for row in rows:
            row["evidence"] = json.loads(row["evidence"])
    return rows


async def violations_by_week(gw: Gateway, partner_id: str, weeks: int = WEEKS) -> dict[str, list[int]]:
    """Rule -> violations found in each of the weeks of `week_starts` (oldest first)."""
    starts = week_starts(gw.now(), weeks)
    since = datetime.combine(starts[0], time(), UTC)
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT rule, at FROM violations WHERE partner_id = ? AND at >= ?", (partner_id, isotime(since))
        )
    out: dict[str, list[int]] = {}
    for row in rows:
        week = (_at(row["at"]) - since).days // 7
        if 0 <= week < weeks:
            out.setdefault(row["rule"], [0] * weeks)[week] += 1
    return dict(sorted(out.items()))


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
