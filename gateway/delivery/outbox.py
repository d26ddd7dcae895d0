"""The outbox: claiming due packages under a lease, and recording what each attempt did.

::

    queued ──claim──> sending ──2xx──────────────> delivered
                        │ ├──retryable, tries left─> retry_wait ──due──> sending
                        │ └──permanent, or last try> dead (last_error says why)
                        └──lease expired (worker died)──> claimed again

A message to a debtor (sms and email partners) that the rule pack does not allow at
claim time is not claimed: it waits, in its state, until the pack allows it, or is dead
if waiting cannot help (:mod:`gateway.delivery.presend`).

A claim is one write transaction: on SQLite ``BEGIN IMMEDIATE`` serialises claims of all
processes; on PostgreSQL the ``FOR UPDATE SKIP LOCKED`` rows let instances claim side by
side. Every attempt gets a row in ``attempts``, including one a dead worker abandoned,
so the history shows each time a package may have reached the partner. Resends carry
the same package id as idempotency key; the partner's effect happens once.
"""

from __future__ import annotations

import functools
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import pybase64

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.delivery import breaker, presend, report
from gateway.delivery.outcome import Outcome
from gateway.errors import PartnerRejected, Retryable
from gateway.lifecycle.columns import open_package
from gateway.plugin.adapter import ACCEPTED, OutboundPackage, Receipt
from gateway.storage import Row, Transaction
from gateway.supervision.redact import redact, values_of
from schemas.package import RECALL_PURPOSE
from schemas.partner import Limits

#: Longest ``Retry-After`` honoured; a partner asking for more is retried after a day.
MAX_RETRY_AFTER = 86400.0
DETAIL_LIMIT = 500
PENDING_STATES = ("queued", "retry_wait", "sending")
_COLUMNS = (
    "id, partner_id, case_id, case_ref, subject_token, purpose, sealing, sealed, signed, attempts,"
    " expires_at, retry_base"
)
#: Packages with their bodies (``sealed`` and ``signed``, a table of their own that a
#: claim reads and never writes: the lease and the result rewrite a small row only).
_WITH_BODIES = "packages JOIN package_bodies ON package_id = id"


# Slots, not frozen: one is made for every package claimed, and a frozen dataclass sets each
# field through object.__setattr__ (see `gateway.supervision.base.Contact`).
@dataclass(slots=True)
class Claimed:
    partner_id: str
    attempt: int
    package: OutboundPackage
    base: int = 0
    """Attempts before the package was last put back in the outbox (`gateway deliveries
    requeue`): backoff and ``max_attempts`` count from there."""

    @property
    def tries(self) -> int:
        return self.attempt - self.base


@dataclass(frozen=True)
class Claim:
    packages: list[Claimed]
    expired: int = 0
    wake_at: str | None = None
    """When something may next be due for this partner (None: nothing pending)."""
    reason: str = ""
    held: int = 0
    """Due, but held back by the rule pack until it allows them (see :mod:`gateway.delivery.presend`)."""
    refused: int = 0
    """Due, but refused by the rule pack: now dead."""


def truncate(text: str, limit: int = DETAIL_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def signed_claims(signed: str) -> dict[str, Any]:
    """The claims of our own signed token, read without verifying: the row is ours."""
    payload = signed.split(".")[1]
    text = pybase64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    try:
        data: dict[str, Any] = orjson.loads(text)  # a third of json.loads's time
    except orjson.JSONDecodeError:  # what orjson does not take (an integer over 64 bits)
        data = json.loads(text)
    return data


def retry_delay(limits: Limits, attempt: int, retry_after: float | None = None) -> float:
    """Seconds before the next try: "full jitter" on exponential backoff (a uniform wait
    up to ``backoff_base * 2**(attempt - 1)``, capped), never earlier than the partner's
    ``Retry-After``. The attempt count lives in the package's row, across processes, so
    this is the schedule alone; in-process retries use tenacity (`gateway.storage.groups`)."""
    delay = random.uniform(0, min(limits.backoff_cap, limits.backoff_base * 2.0 ** min(attempt - 1, 60)))
    floor = bounded_retry_after(retry_after)
    return delay if floor is None else max(delay, floor)


def bounded_retry_after(value: float | None) -> float | None:
    """A partner's ``Retry-After`` as honoured: at most ``MAX_RETRY_AFTER`` seconds."""
    if value is None or not math.isfinite(value):
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER)


async def claim(
    gw: Gateway, partner_id: str, owner: str, limit: int, lease: float, cutoff: str | None = None,
    *, probe_seconds: float | None = None,
) -> Claim:
    """Take up to ``limit`` due packages of one partner for ``lease`` seconds.

    Due means queued or retry_wait with ``next_attempt_at`` at or before ``cutoff``
    (default now), or sending under a lease that expired. Of a partner that is not
    active only recall notices go out (a suspended or offboarded partner must still be
    told to delete); its other packages stay where they are, and so do packages the
    circuit breaker holds back. Messages to debtors (sms and email partners) the rule
    pack does not allow now are held or refused instead (:func:`presend.screen`).
    A half-open breaker's probe holds the gate ``probe_seconds`` at most (default: the
    lease): :func:`breaker.probe_lease` of the partner's attempt timeout.
    """
    now = gw.now()
    at = isotime(now)
    due = cutoff or at
    async with gw.db.transaction() as tx:
        status = await tx.fetchval("SELECT status FROM partners WHERE id = ?", (partner_id,))
        rows = await _due(tx, partner_id, status == "active", due, limit)
        if not rows:
            if status != "active":
                return Claim([], reason=f"partner is {status}")
            return Claim([], wake_at=await _next_due(tx, partner_id))
        expired = [r for r in rows if r["expires_at"] <= at]
        await _abandon(tx, [r for r in rows if r["lease_owner"]], at)
        await tx.executemany(
            "UPDATE packages SET state = 'dead', lease_owner = NULL, lease_until = NULL,"
            " last_error = ? WHERE id = ?",
            [(f"expired at {r['expires_at']} before it could be delivered", r["id"]) for r in expired],
        )
        rows = [r for r in rows if r["expires_at"] > at]
        stopped = await presend.screen(gw, tx, partner_id, rows, now) if rows else []
        await _stop(tx, stopped)
        report.dead_unsent(gw, tx, expired, "expired")
        refused_ids = {s.package_id for s in stopped if not s.until}
        report.dead_unsent(gw, tx, [r for r in rows if r["id"] in refused_ids], "refused")
        rows = [r for r in rows if r["id"] not in {s.package_id for s in stopped}]
        probe = lease if probe_seconds is None else probe_seconds
        allowed = await breaker.gate(tx, partner_id, now, probe, len(rows)) if rows else None
        if allowed is not None and allowed.allowed < len(rows):
            rows = rows[: allowed.allowed]
        rows = await _take(gw, tx, rows, owner, isotime(now + timedelta(seconds=lease)))
    wake = allowed.wake_at if allowed else None
    held = sum(1 for s in stopped if s.until)
    return Claim(
        [_claimed(r) for r in rows],
        len(expired),
        wake,
        allowed.reason if allowed else "",
        held=held,
        refused=len(stopped) - held,
    )


async def _due(tx: Transaction, partner_id: str, active: bool, due: str, limit: int) -> list[Row]:
    """Up to ``limit`` packages due by ``due``: expired leases first, then retries, then
    new ones; of a partner that is not active, recall notices only."""
    only = "" if active else f" AND purpose = '{RECALL_PURPOSE}'"
    rows = await tx.fetchall(
        f"SELECT {_COLUMNS}, lease_owner, lease_until FROM {_WITH_BODIES} WHERE partner_id = ?"
        f" AND state = 'sending' AND lease_until <= ?{only} LIMIT ?{tx.skip_locked('packages')}",
        (partner_id, due, limit),
    )
    for state in ("retry_wait", "queued"):
        if len(rows) < limit:
            rows += await tx.fetchall(
                f"SELECT {_COLUMNS}, NULL AS lease_owner, NULL AS lease_until FROM {_WITH_BODIES}"
                f" WHERE partner_id = ? AND state = ? AND next_attempt_at <= ?{only}"
                f" ORDER BY next_attempt_at LIMIT ?{tx.skip_locked('packages')}",
                (partner_id, state, due, limit - len(rows)),
            )
    return rows


async def _take(gw: Gateway, tx: Transaction, rows: list[Row], owner: str, until: str) -> list[Row]:
    """Lease ``rows`` to ``owner``; return them with their sealed and signed forms
    decrypted (they are stored encrypted, `gateway.storage.atrest`)."""
    await tx.executemany(
        "UPDATE packages SET state = 'sending', lease_owner = ?, lease_until = ?,"
        " attempts = attempts + 1 WHERE id = ?",
        [(owner, until, r["id"]) for r in rows],
    )
    return [await open_package(gw.keyring, tx, r) for r in rows]


def _claimed(row: Row) -> Claimed:
    package = OutboundPackage(
        package_id=row["id"],
        case_ref=row["case_ref"],
        purpose=row["purpose"],
        sealing=row["sealing"],
        sealed=row["sealed"],
        claims_from=functools.partial(signed_claims, row["signed"]),
    )
    return Claimed(row["partner_id"], row["attempts"] + 1, package, row["retry_base"] or 0)


async def _stop(tx: Transaction, stopped: list[presend.Stopped]) -> None:
    """Held: back to waiting until the rule pack allows it, no attempt counted. Refused: dead."""
    await tx.executemany(
        "UPDATE packages SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'retry_wait' END,"
        " next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, last_error = ? WHERE id = ?",
        [(isotime(s.until), truncate(s.reason), s.package_id) for s in stopped if s.until],
    )
    await tx.executemany(
        "UPDATE packages SET state = 'dead', lease_owner = NULL, lease_until = NULL, last_error = ?"
        " WHERE id = ?",
        [(truncate(s.reason), s.package_id) for s in stopped if not s.until],
    )


async def _abandon(tx: Transaction, rows: list[Row], at: str) -> None:
    """Record the attempts of workers that died holding a lease: they may have sent."""
    await tx.executemany(
        "INSERT INTO attempts (package_id, number, started_at, latency_ms, outcome, error_class,"
        " detail) VALUES (?, ?, ?, 0, 'abandoned', 'LeaseExpired', ?) ON CONFLICT DO NOTHING",
        [
            (r["id"], r["attempts"], r["lease_until"],
             f"worker {r['lease_owner']} held the lease until {r['lease_until']} and did not finish")
            for r in rows
        ],
    )


async def _next_due(tx: Transaction, partner_id: str) -> str | None:
    times = [
        await tx.fetchval(
            "SELECT MIN(next_attempt_at) FROM packages WHERE partner_id = ? AND state = ?",
            (partner_id, state),
        )
        for state in ("queued", "retry_wait")
    ]
    times.append(
        await tx.fetchval(
            "SELECT MIN(lease_until) FROM packages WHERE partner_id = ? AND state = 'sending'",
            (partner_id,),
        )
    )
    return min((t for t in times if t), default=None)


def judge(
    claimed: Claimed, limits: Limits, started: datetime, latency_ms: float,
    result: Receipt | BaseException, now: datetime,
) -> Outcome:
    """The state a package goes to after one attempt, and the attempt's record."""
    base: dict[str, Any] = {
        "package_id": claimed.package.package_id, "partner_id": claimed.partner_id,
        "attempt": claimed.attempt, "started_at": isotime(started), "latency_ms": latency_ms,
    }
    # The partner's words are kept for operators, without the package's personal data.
    if isinstance(result, Receipt):
        detail = result.detail
        if detail != ACCEPTED:
            detail = truncate(redact(detail, values_of(claimed.package.claims.get("data"))))
        return Outcome(**base, signal="success", state="delivered", status=result.status, error_class=None,
                       detail=detail, partner_ref=result.partner_ref)
    sent = values_of(claimed.package.claims.get("data"))
    status = getattr(result, "status", None)
    detail = truncate(redact(str(result) or type(result).__name__, sent))
    # Anything that is not a known permanent refusal (a bug, an unexpected library
    # error) is retried: a fixed deployment then delivers instead of losing the package.
    retryable = isinstance(result, Retryable) or not hasattr(result, "status")
    retry_after = bounded_retry_after(result.retry_after) if isinstance(result, Retryable) else None
    if isinstance(result, Retryable):
        base["signal"] = "failure"
    elif isinstance(result, PartnerRejected):
        base["signal"] = "success"
    if retryable and claimed.tries < limits.max_attempts:
        delay = retry_delay(limits, claimed.tries, retry_after)
        return Outcome(**base, state="retry_wait", status=_text(status),
                       error_class=type(result).__name__, detail=detail,
                       next_attempt_at=isotime(now + timedelta(seconds=delay)),
                       retry_after=retry_after)
    if retryable:
        detail = truncate(f"gave up after {claimed.tries} attempts; last: {detail}")
    return Outcome(**base, state="dead", status=_text(status),
                   error_class=type(result).__name__, detail=detail, retry_after=retry_after)


def _text(status: object) -> str | None:
    return None if status is None else str(status)


async def finish(
    gw: Gateway, owner: str, outcomes: list[Outcome], policy: breaker.BreakerPolicy
) -> set[str]:
    """Store a batch of attempt results and feed them to the partners' breakers; return
    the partners now held back by their breaker."""
    now = gw.now()
    async with gw.db.transaction() as tx:
        await tx.executemany(
            "UPDATE packages SET state = ?, next_attempt_at = COALESCE(?, next_attempt_at),"
            " lease_owner = NULL, lease_until = NULL, partner_ref = COALESCE(?, partner_ref),"
            " last_error = ? WHERE id = ? AND lease_owner = ? AND attempts = ? AND state = 'sending'",
            [
                (o.state, o.next_attempt_at, o.partner_ref,
                 None if o.state == "delivered" else f"{o.error_class}: {o.detail}",
                 o.package_id, owner, o.attempt)
                for o in outcomes
            ],
        )
        await tx.executemany(
            "INSERT INTO attempts (package_id, number, started_at, latency_ms, outcome, status,"
            " error_class, detail, retry_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [
                (o.package_id, o.attempt, o.started_at, round(o.latency_ms, 3),
                 {"retry_wait": "retry"}.get(o.state, o.state), o.status, o.error_class,
                 o.detail, o.next_attempt_at)
                for o in outcomes
            ],
        )
        await presend.record_sent(gw.adapters, tx, outcomes, now)
        report.attempts_stored(gw, tx, outcomes, await _cases(tx, [o for o in outcomes if o.state == "dead"]))
        by_partner: dict[str, list[breaker.Result]] = {}
        for o in outcomes:
            if o.signal:
                result = breaker.Result(o.signal, o.retry_after, o.started_at)
                by_partner.setdefault(o.partner_id, []).append(result)
        return {
            partner_id
            for partner_id, results in by_partner.items()
            if await breaker.record(tx, partner_id, results, now, policy)
        }


async def _cases(tx: Transaction, outcomes: list[Outcome]) -> dict[str, str]:
    """The case id of each package of ``outcomes``."""
    if not outcomes:
        return {}
    marks = ", ".join("?" for _ in outcomes)
    found = await tx.fetchall(
        f"SELECT id, case_id FROM packages WHERE id IN ({marks})", [o.package_id for o in outcomes]
    )
    return {r["id"]: r["case_id"] for r in found}


async def unclaim(gw: Gateway, owner: str, claimed: list[Claimed]) -> None:
    """Put claimed packages that were never sent back as they were before the claim.
    A package is matched by its claim (owner and attempt number), not only its owner: if
    its lease ran out and this process claimed it again, the newer claim stays."""
    async with gw.db.transaction() as tx:
        await tx.executemany(
            "UPDATE packages SET state = CASE WHEN attempts <= 1 THEN 'queued' ELSE 'retry_wait' END,"
            " attempts = attempts - 1, lease_owner = NULL, lease_until = NULL"
            " WHERE id = ? AND lease_owner = ? AND attempts = ? AND state = 'sending'",
            [(c.package.package_id, owner, c.attempt) for c in claimed],
        )


async def release(gw: Gateway, owner: str) -> int:
    """Give back leases still held at shutdown; their attempts were cut short."""
    at = isotime(gw.now())
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT id, attempts FROM packages WHERE lease_owner = ? AND state = 'sending'", (owner,)
        )
        await tx.executemany(
            "INSERT INTO attempts (package_id, number, started_at, latency_ms, outcome, error_class,"
            " detail) VALUES (?, ?, ?, 0, 'interrupted', 'Shutdown', 'dispatcher stopped during"
            " the attempt') ON CONFLICT DO NOTHING",
            [(r["id"], r["attempts"], at) for r in rows],
        )
        await tx.executemany(
            "UPDATE packages SET state = 'retry_wait', next_attempt_at = ?, lease_owner = NULL,"
            " lease_until = NULL WHERE id = ? AND lease_owner = ?",
            [(at, r["id"], owner) for r in rows],
        )
    return len(rows)


async def counts(gw: Gateway, cutoff: str | None = None) -> dict[str, int]:
    """Packages per state, and how many are due at ``cutoff`` but not yet sent."""
    async with gw.db.transaction() as tx:
        rows = await tx.fetchall("SELECT state, COUNT(*) AS n FROM packages GROUP BY state")
        due = await tx.fetchval(
            "SELECT COUNT(*) FROM packages WHERE state IN ('queued', 'retry_wait')"
            " AND next_attempt_at <= ?",
            (cutoff or isotime(gw.now()),),
        )
    return {**{r["state"]: r["n"] for r in rows}, "due": due}
