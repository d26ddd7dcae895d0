"""The circuit breaker per partner, kept in the database (table ``partner_state``).

It lives in the database rather than in memory so that every dispatcher process sees
the same state: a partner that is down is paused by all of them, and only one of them
sends the half-open probe.

::

    closed --N consecutive failures--> open --cool-down over--> half_open
    half_open --probe succeeds--> closed
    half_open --probe fails-----> open (a new cool-down)

A failure is a retryable error (5xx, 408/425/429, timeout, refused connection). A
permanent rejection (other 4xx) proves the partner is up, so it counts as a success
here. ``Retry-After`` is honoured for the whole partner through ``paused_until``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from gateway.clock import isotime
from gateway.storage import Row, Transaction

Signal = Literal["success", "failure"]


@dataclass(frozen=True)
class BreakerPolicy:
    threshold: int = 5
    """Consecutive failures that open the breaker."""
    cooldown: float = 30.0
    """Seconds the breaker stays open before one probe may go."""


@dataclass(frozen=True)
class Gate:
    """What a dispatcher may do for one partner now."""

    allowed: int
    """How many packages it may claim (0: none now; 1 while probing)."""
    wake_at: str | None = None
    """When the gate may open again, if it is shut for a known time."""
    reason: str = ""


async def _state(tx: Transaction, partner_id: str, now: str) -> Row:
    """The partner's row, locked until the transaction ends (processes take turns)."""
    await tx.execute(
        "INSERT INTO partner_state (partner_id, updated_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (partner_id, now),
    )
    row = await tx.fetchone(
        f"SELECT * FROM partner_state WHERE partner_id = ?{tx.for_update}", (partner_id,)
    )
    assert row is not None
    return row


async def gate(
    tx: Transaction, partner_id: str, now: datetime, probe_lease: float, wanted: int
) -> Gate:
    """Decide, inside the claiming transaction, how many packages may go to the partner.

    Taking the probe is a write in the same transaction as the claim, so of several
    processes exactly one gets it; if that one dies, its probe expires with its lease.
    """
    at = isotime(now)
    row = await _state(tx, partner_id, at)
    if row["paused_until"] and row["paused_until"] > at:
        return Gate(0, row["paused_until"], "paused by Retry-After")
    if row["breaker"] == "closed":
        return Gate(wanted)
    if row["breaker"] == "open" and row["opened_until"] > at:
        return Gate(0, row["opened_until"], "circuit open")
    if row["breaker"] == "half_open" and row["probe_until"] and row["probe_until"] > at:
        return Gate(0, row["probe_until"], "probe in flight")
    await tx.execute(
        "UPDATE partner_state SET breaker = 'half_open', probe_until = ?, updated_at = ?"
        " WHERE partner_id = ?",
        (isotime(now + timedelta(seconds=probe_lease)), at, partner_id),
    )
    return Gate(min(1, wanted), reason="half-open probe")


async def record(
    tx: Transaction,
    partner_id: str,
    signals: Iterable[tuple[Signal, float | None]],
    now: datetime,
    policy: BreakerPolicy,
) -> bool:
    """Apply attempt results, in the order they happened: (signal, retry_after).
    Return whether the partner is now held back (breaker not closed, or paused)."""
    at = isotime(now)
    row = await _state(tx, partner_id, at)
    breaker, failures = row["breaker"], row["failures"]
    opened_until, paused_until = row["opened_until"], row["paused_until"]
    for signal, retry_after in signals:
        if retry_after:
            until = isotime(now + timedelta(seconds=retry_after))
            paused_until = max(paused_until or until, until)
        if signal == "success":
            breaker, failures, opened_until = "closed", 0, None
            continue
        failures += 1
        if breaker == "half_open" or (breaker == "closed" and failures >= policy.threshold):
            breaker = "open"
            opened_until = isotime(now + timedelta(seconds=policy.cooldown))
    await tx.execute(
        "UPDATE partner_state SET breaker = ?, failures = ?, opened_until = ?, paused_until = ?,"
        " probe_until = CASE WHEN ? = 'half_open' THEN probe_until END, updated_at = ?"
        " WHERE partner_id = ?",
        (breaker, failures, opened_until, paused_until, breaker, at, partner_id),
    )
    return breaker != "closed" or bool(paused_until and paused_until > at)


async def states(tx: Transaction) -> list[Row]:
    return await tx.fetchall("SELECT * FROM partner_state ORDER BY partner_id")
