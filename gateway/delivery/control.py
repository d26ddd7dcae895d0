"""What operators see and change of the delivery machinery: circuit breakers, and why a
package is waiting.

Every reading here comes from the database (``packages``, ``partner_state``,
``partners``), so it is the same whichever dispatcher process holds the lease.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.errors import NotFound
from gateway.storage import Row, Transaction
from gateway.supervision.base import local_time
from schemas.audit import BreakerReset

#: Prefix of ``last_error`` for a message the rule pack holds (`gateway.delivery.presend`).
HELD_PREFIX = "held by the rule pack"
WAITING = ("queued", "retry_wait")
#: The debtor's time zone of a package ``p``, as a column for `why`.
TIMEZONE = (
    "(SELECT a.timezone FROM assignments a WHERE a.partner_id = p.partner_id"
    " AND a.case_ref = p.case_ref) AS timezone"
)


async def breakers(gw: Gateway, partner_id: str | None = None) -> list[dict[str, Any]]:
    """Each partner's breaker: state, failures in a row, until when open or paused."""
    async with gw.db.transaction() as tx:
        partners = await tx.fetchall(
            "SELECT id, status FROM partners" + (" WHERE id = ?" if partner_id else "") + " ORDER BY id",
            (partner_id,) if partner_id else (),
        )
        if partner_id and not partners:
            raise NotFound(f"no partner {partner_id!r} (see `gateway partners list`)")
        states = {r["partner_id"]: r for r in await tx.fetchall("SELECT * FROM partner_state")}
    now = isotime(gw.now())
    return [_breaker_view(p, states.get(p["id"]), now) for p in partners]


def _breaker_view(partner: Row, state: Row | None, now: str) -> dict[str, Any]:
    state = state or {}
    opened = state.get("opened_until")
    return {
        "partner": partner["id"],
        "partner_status": partner["status"],
        "breaker": state.get("breaker", "closed"),
        "failures": state.get("failures", 0),
        "open_until": opened if opened and opened > now else None,
        "probe_until": state.get("probe_until"),
        "updated_at": state.get("updated_at"),
    }


async def reset_breaker(gw: Gateway, partner_id: str, *, actor: str) -> str:
    """Close the partner's breaker and forget the failures it counted; return the state
    it had. Recorded in the audit log."""
    now = isotime(gw.now())
    async with gw.db.transaction() as tx:
        if await tx.fetchval("SELECT COUNT(*) FROM partners WHERE id = ?", (partner_id,)) == 0:
            raise NotFound(f"no partner {partner_id!r} (see `gateway partners list`)")
        row = await tx.fetchone(
            f"SELECT breaker FROM partner_state WHERE partner_id = ?{tx.for_update}", (partner_id,)
        )
        previous = row["breaker"] if row else "closed"
        await tx.execute(
            "UPDATE partner_state SET breaker = 'closed', failures = 0, recent = '[]', opened_at = NULL,"
            " opened_until = NULL, probe_until = NULL, updated_at = ? WHERE partner_id = ?",
            (now, partner_id),
        )
        await gw.record(tx, [BreakerReset(at=now, actor=actor, partner=partner_id, previous=previous)])
    return previous


async def waiting_context(tx: Transaction) -> tuple[dict[str, Row], dict[str, Row]]:
    """Partners (status) and breaker rows, by partner id, for `why`."""
    partners = {r["id"]: r for r in await tx.fetchall("SELECT id, status, status_reason FROM partners")}
    states = {r["partner_id"]: r for r in await tx.fetchall("SELECT * FROM partner_state")}
    return partners, states


def _both(at: str, timezone: str | None) -> str:
    """A stored UTC time, and the debtor's local time when known."""
    if not timezone:
        return at
    moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return f"{at} = {local_time(moment, ZoneInfo(timezone))} debtor's local time"


def why(row: Row, partner: Row | None, state: Row | None, now: str) -> str:
    """Why a package is where it is, in one line; empty for a delivered one."""
    if row["state"] not in WAITING:
        return {
            "sending": f"being sent (lease until {row.get('lease_until')})",
            "dead": f"dead: {row.get('last_error') or ''}".rstrip(": "),
            "recalled": "recalled before it was sent",
        }.get(row["state"], "")
    if row["purpose"] != "recall" and partner is not None and partner["status"] != "active":
        reason = partner["status_reason"] or "no reason"
        return f"partner {partner['status']} ({reason}): waits until reinstated"
    last_error = row.get("last_error") or ""
    if last_error.startswith(HELD_PREFIX):
        return last_error  # names the rules and the time in UTC and the debtor's local time
    state = state or {}
    if state.get("breaker") == "open" and (state.get("opened_until") or "") > now:
        return (
            f"circuit breaker open until {state['opened_until']} "
            f"({state['failures']} failures in its window); then one probe goes"
        )
    if state.get("breaker") in ("open", "half_open"):
        return "circuit breaker half-open: a probe decides"
    if row["next_attempt_at"] > now:
        if row["state"] == "retry_wait":
            return f"retrying at {row['next_attempt_at']} after: {last_error}"
        return f"waiting until {_both(row['next_attempt_at'], row.get('timezone'))}"
    if row["state"] == "retry_wait":
        return f"due now (retry) after: {last_error}"
    return "due now: waiting for a dispatcher"


async def deliveries(
    gw: Gateway, partner_id: str | None = None, state: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Packages, newest first, each with why it is where it is."""
    where, params = [], []
    if partner_id:
        where.append("partner_id = ?")
        params.append(partner_id)
    if state:
        where.append("state = ?")
        params.append(state)
    sql = (
        "SELECT id, partner_id, purpose, state, attempts, next_attempt_at, lease_until, partner_ref,"
        f" last_error, {TIMEZONE} FROM packages p"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY created_at DESC, id LIMIT ?"
    )
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(sql, (*params, limit))
        partners, states = await waiting_context(tx)
    now = isotime(gw.now())
    for row in rows:
        row["why"] = why(row, partners.get(row["partner_id"]), states.get(row["partner_id"]), now)
        del row["purpose"], row["lease_until"], row["timezone"]
    return rows
