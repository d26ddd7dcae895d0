"""The circuit breaker per partner, kept in the database (table ``partner_state``).

It lives in the database rather than in memory so that every dispatcher process sees
the same state: a partner that is down is paused by all of them, and only one of them
sends the half-open probe.

::

    closed --failure rate over the window--> open --cool-down over--> half_open
    half_open --probe succeeds--> closed (the window starts empty)
    half_open --probe fails-----> open (a new cool-down)

It opens on a *rate*: when the attempts of the last ``window_seconds`` (counted in
buckets kept in the row, so every process adds to the same counts) number at least
``min_attempts`` and at least ``failure_rate`` of them failed. A partner failing now
and then keeps its traffic; its failed packages are retried with backoff. A failure is a
retryable error (5xx, 408/425/429, timeout, refused connection). A permanent rejection
(other 4xx) proves the partner is up, so it counts as a success here.

An attempt that started before the breaker last opened says nothing new (it was in
flight when the partner was judged): it counts for nothing. A probe is one package and
holds the gate for the attempt timeout plus ``PROBE_MARGIN`` at most, so a probe whose
process died frees the gate that soon, not after a whole lease.

``Retry-After`` holds back the package that got it (see ``outbox.retry_delay``); the
whole partner waits for it once the breaker opens: the cool-down is then at least the
longest ``Retry-After`` the window holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

from gateway.clock import isotime
from gateway.config import BreakerPolicy
from gateway.storage import Row, Transaction

__all__ = ["BreakerPolicy", "Gate", "Result", "gate", "probe_lease", "record", "states"]

Signal = Literal["success", "failure"]
#: Seconds a probe may take beyond the attempt timeout (storing its result).
PROBE_MARGIN = 5.0
#: Buckets the window is counted in: it slides by a twelfth of its length.
BUCKETS = 12


class Result(NamedTuple):
    """What one attempt tells the breaker."""

    signal: Signal
    retry_after: float | None
    started_at: str


@dataclass(frozen=True)
class Gate:
    """What a dispatcher may do for one partner now."""

    allowed: int
    """How many packages it may claim (0: none now; 1 while probing)."""
    wake_at: str | None = None
    """When the gate may open again, if it is shut for a known time."""
    reason: str = ""


def probe_lease(attempt_timeout: float) -> float:
    """How long a probe holds the gate: one attempt, and storing its result."""
    return attempt_timeout + PROBE_MARGIN


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
    tx: Transaction, partner_id: str, now: datetime, probe_seconds: float, wanted: int
) -> Gate:
    """Decide, inside the claiming transaction, how many packages may go to the partner.

    Taking the probe is a write in the same transaction as the claim, so of several
    processes exactly one gets it; if that one dies, its probe expires after
    ``probe_seconds`` (:func:`probe_lease` of the partner's attempt timeout).
    """
    at = isotime(now)
    row = await _state(tx, partner_id, at)
    if row["breaker"] == "closed":
        return Gate(wanted)
    if row["breaker"] == "open" and row["opened_until"] > at:
        return Gate(0, row["opened_until"], "circuit open")
    if row["breaker"] == "half_open" and row["probe_until"] and row["probe_until"] > at:
        return Gate(0, row["probe_until"], "probe in flight")
    await tx.execute(
        "UPDATE partner_state SET breaker = 'half_open', probe_until = ?, updated_at = ?"
        " WHERE partner_id = ?",
        (isotime(now + timedelta(seconds=probe_seconds)), at, partner_id),
    )
    return Gate(min(1, wanted), reason="half-open probe")


@dataclass
class Window:
    """Attempts of the last ``window_seconds`` in buckets ``[start, attempts, failures,
    retry_until]`` (seconds since the epoch)."""

    buckets: list[list[float]] = field(default_factory=list)

    @classmethod
    def load(cls, text: str | None, now: float, policy: BreakerPolicy) -> Window:
        width = policy.window_seconds / BUCKETS
        since = now - policy.window_seconds
        return cls([b for b in json.loads(text or "[]") if b[0] + width > since])

    def add(self, now: float, failed: bool, retry_until: float, policy: BreakerPolicy) -> None:
        width = policy.window_seconds / BUCKETS
        start = now - now % width
        if not self.buckets or self.buckets[-1][0] != start:
            self.buckets.append([start, 0, 0, 0.0])
        bucket = self.buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] = max(bucket[3], retry_until)

    @property
    def attempts(self) -> int:
        return int(sum(b[1] for b in self.buckets))

    @property
    def failures(self) -> int:
        return int(sum(b[2] for b in self.buckets))

    @property
    def retry_until(self) -> float:
        return max((b[3] for b in self.buckets), default=0.0)

    def tripped(self, policy: BreakerPolicy) -> bool:
        attempts = self.attempts
        return attempts >= policy.min_attempts and self.failures >= policy.failure_rate * attempts


@dataclass
class State:
    """The breaker of one partner while a batch of results is applied to it."""

    breaker: str
    window: Window
    failures: int
    """Failures in the window; once open, those that opened it."""
    opened_at: str | None
    opened_until: str | None

    def apply(self, result: Result, now: datetime, policy: BreakerPolicy) -> None:
        if self.opened_at is not None and result.started_at < self.opened_at:
            return  # in flight when the partner was judged: nothing new
        failed = result.signal == "failure"
        retry_until = now.timestamp() + (result.retry_after or 0) if failed else 0.0
        if self.breaker == "half_open":  # the probe's result
            if failed:
                self._open(now, policy, retry_until)
            else:
                self.breaker, self.window, self.failures = "closed", Window(), 0
        elif self.breaker == "closed":
            self.window.add(now.timestamp(), failed, retry_until, policy)
            self.failures = self.window.failures
            if self.window.tripped(policy):
                self._open(now, policy, self.window.retry_until)

    def _open(self, now: datetime, policy: BreakerPolicy, retry_until: float) -> None:
        until = max(now.timestamp() + policy.cooldown_seconds, retry_until)
        self.breaker, self.window = "open", Window()
        self.opened_at = isotime(now)
        self.opened_until = isotime(datetime.fromtimestamp(until, UTC))


async def record(
    tx: Transaction, partner_id: str, results: Iterable[Result], now: datetime, policy: BreakerPolicy
) -> bool:
    """Apply attempt results, in the order they happened; return whether the partner is
    now held back (breaker not closed)."""
    at = isotime(now)
    row = await _state(tx, partner_id, at)
    window = Window.load(row["recent"], now.timestamp(), policy)
    state = State(row["breaker"], window, row["failures"], row["opened_at"], row["opened_until"])
    for result in results:
        state.apply(result, now, policy)
    await tx.execute(
        "UPDATE partner_state SET breaker = ?, failures = ?, recent = ?, opened_at = ?,"
        " opened_until = ?, probe_until = CASE WHEN ? = 'half_open' THEN probe_until END,"
        " updated_at = ? WHERE partner_id = ?",
        (
            state.breaker, state.failures, json.dumps(state.window.buckets), state.opened_at,
            state.opened_until, state.breaker, at, partner_id,
        ),
    )
    return state.breaker != "closed"


async def states(tx: Transaction) -> list[Row]:
    return await tx.fetchall("SELECT * FROM partner_state ORDER BY partner_id")
