"""Recent activity per partner, counted from the database: today's delivery attempts
that delivered and those that failed (UTC day), and violations found in the last 7 and
30 days. The gauges of `gateway.ops.metrics.summary` say how things stand; these say
what happened lately. The dashboard shows both."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from gateway.clock import isotime
from gateway.storage import Database

#: Attempt outcomes that count as a failure (`attempts.outcome`).
FAILED = ("retry", "dead", "abandoned")
#: Windows of the violation counts, in days.
VIOLATION_DAYS = (7, 30)


def day_start(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day: where "today" starts."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


async def activity(db: Database, now: datetime) -> dict[str, dict[str, int]]:
    """Partner id -> ``delivered_today``, ``failed_today``, ``violations_7d``,
    ``violations_30d`` (only partners with something to count)."""
    marks = ", ".join("?" for _ in FAILED)
    out: dict[str, dict[str, Any]] = {}
    async with db.transaction() as tx:
        attempts = await tx.fetchall(
            "SELECT p.partner_id, SUM(CASE WHEN a.outcome = 'delivered' THEN 1 ELSE 0 END) AS delivered,"
            f" SUM(CASE WHEN a.outcome IN ({marks}) THEN 1 ELSE 0 END) AS failed"
            " FROM attempts a JOIN packages p ON p.id = a.package_id"
            " WHERE a.started_at >= ? GROUP BY p.partner_id",
            (*FAILED, isotime(day_start(now))),
        )
        for row in attempts:
            counts = out.setdefault(row["partner_id"], empty())
            counts["delivered_today"], counts["failed_today"] = int(row["delivered"]), int(row["failed"])
        for days in VIOLATION_DAYS:
            rows = await tx.fetchall(
                "SELECT partner_id, COUNT(*) AS n FROM violations WHERE at >= ? GROUP BY partner_id",
                (isotime(now - timedelta(days=days)),),
            )
            for row in rows:
                out.setdefault(row["partner_id"], empty())[f"violations_{days}d"] = int(row["n"])
    return out


def empty() -> dict[str, int]:
    return {"delivered_today": 0, "failed_today": 0, **{f"violations_{d}d": 0 for d in VIOLATION_DAYS}}
