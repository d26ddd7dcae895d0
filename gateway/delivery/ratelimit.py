"""A partner's rate and concurrency limits, kept in the database for the whole deployment.

Every dispatcher process (and every lane of one) sends to a partner within the same
``rate_per_second`` and ``concurrency``, however many run: both are counted in rows the
processes share, as the circuit breaker is (:mod:`gateway.delivery.breaker`).

The rate (table ``partner_limits``) is a GCRA, the token bucket kept as one number per
partner: ``next_send``, the theoretical time of the next send on the database's clock.
A bucket of ``max(1, rate)`` tokens allows a burst of one second's worth, then the rate.
A lane reserves the send times of several messages in one transaction (a quarter of a
second's worth at most, fewer if it has fewer to send) and waits for each time before
sending: the database is not asked per message, and reserved sends are spread over
time, never bunched. Times reserved by a lane that stops or dies are lost, which can
only slow the partner's traffic, never speed it up.

Concurrency (table ``partner_slots``) is a lease per lane: how many slots the lane holds,
how many it would like (the partner's ``concurrency`` while it has work, else none) and
when its hold expires. A lane renews its hold while it holds slots; slots of a lane
whose dispatcher was killed count until their expiry (``[dispatch] slot_lease_seconds``,
at most half the claims' lease) and then return. Slots are shared fairly among the
lanes that want them (each gets an equal share of what the others do not need, what
does not split evenly goes to each in turn); a lane over its share gives back as its
attempts end, and takes no new ones meanwhile. Decisions take turns on the
partner's ``partner_limits`` row (``FOR UPDATE``; SQLite's writers take turns anyway).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.storage import Transaction

#: Seconds of the partner's rate one reservation takes at most.
HORIZON = 0.25


def schedule(next_send: float, now: float, count: int, rate: float) -> tuple[list[float], float]:
    """The times of ``count`` sends reserved at ``now``, and the new ``next_send``.

    GCRA with a burst of ``max(1, rate)``: send *i* may go at ``next_send + i / rate``
    less the burst's tolerance, and not before now.
    """
    interval = 1.0 / rate
    tolerance = (max(1.0, rate) - 1.0) * interval
    start = max(next_send, now)
    times = [max(now, start + i * interval - tolerance) for i in range(count)]
    return times, start + count * interval


def batch_size(rate: float, demand: int) -> int:
    """How many send times to reserve in one go: what is waiting to be sent, at most
    ``HORIZON`` seconds of the rate, at least one."""
    return max(1, min(demand, math.floor(rate * HORIZON)))


def fair_shares(total: int, wants: Mapping[str, int], turn: int = 0) -> dict[str, int]:
    """``total`` slots shared among holders by what they want ("water-filling"): a
    holder wanting less than an equal share gets what it wants, the rest is split
    equally among the others. What does not split evenly goes to holders in an order
    that changes with ``turn``: with more holders than slots, each gets some in turn."""
    shares: dict[str, int] = {}
    left = total
    ordered = sorted(wants.items(), key=lambda item: (item[1], zlib.crc32(f"{turn}/{item[0]}".encode())))
    for index, (holder, want) in enumerate(ordered):
        shares[holder] = min(want, left // (len(ordered) - index))
        left -= shares[holder]
    return shares


async def _lock(tx: Transaction, partner_id: str) -> float:
    """Lock the partner's row until the transaction ends; return its ``next_send``."""
    await tx.execute(
        "INSERT INTO partner_limits (partner_id) VALUES (?) ON CONFLICT DO NOTHING", (partner_id,)
    )
    value = await tx.fetchval(
        f"SELECT next_send FROM partner_limits WHERE partner_id = ?{tx.for_update}", (partner_id,)
    )
    return float(value)


async def reserve(tx: Transaction, partner_id: str, count: int, rate: float) -> tuple[float, list[float]]:
    """Reserve ``count`` sends to the partner: the database's time now, and the time of
    each send (its clock, seconds since the epoch)."""
    next_send = await _lock(tx, partner_id)
    now = await tx.clock()  # after the lock: a wait for it must not make it stale
    times, next_send = schedule(next_send, now, count, rate)
    await tx.execute(
        "UPDATE partner_limits SET next_send = ? WHERE partner_id = ?", (next_send, partner_id)
    )
    return now, times


@dataclass(frozen=True)
class Hold:
    held: int
    """Slots the holder is counted for, in flight or free to start."""
    usable: int
    """Attempts the holder may have in flight now (less than ``held`` while it gives
    back slots it is still using)."""
    sharers: int
    """Holders that want slots now, this one included: they share the rate too."""
    locked_at: float
    """``time.monotonic()`` once the partner's lock was held. The hold lasts at least a
    lease from then (its expiry counts from the database's clock, read after). Others
    take expired slots only under this lock, so if the holder's previous hold had not
    lapsed by then, the slots were its own all along."""


async def hold(
    tx: Transaction, partner_id: str, holder: str, *, wanted: int, in_use: int, concurrency: int,
    lease: float,
) -> Hold:
    """Set the holder's wish and renew its hold for ``lease`` seconds; return its share.

    ``in_use``: attempts it has in flight and starts none more until this returns; they
    stay counted even beyond its share. ``concurrency``: the partner's limit.
    """
    await _lock(tx, partner_id)
    locked_at = time.monotonic()
    now = await tx.clock()
    await tx.execute("DELETE FROM partner_slots WHERE partner_id = ? AND expires <= ?", (partner_id, now))
    others = await tx.fetchall(
        "SELECT holder, held, wanted FROM partner_slots WHERE partner_id = ? AND holder <> ?",
        (partner_id, holder),
    )
    wants = {r["holder"]: int(r["wanted"]) for r in others} | {holder: wanted}
    free = concurrency - sum(int(r["held"]) for r in others)
    share = fair_shares(concurrency, wants, turn=int(now // lease))[holder]
    usable = max(0, min(wanted, share, free))
    held = max(in_use, usable)
    if held == 0 and wanted == 0:
        await drop(tx, partner_id, holder)
    else:
        await tx.execute(
            "INSERT INTO partner_slots (partner_id, holder, held, wanted, expires) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (partner_id, holder) DO UPDATE SET held = excluded.held,"
            " wanted = excluded.wanted, expires = excluded.expires",
            (partner_id, holder, held, wanted, now + lease),
        )
    return Hold(held, usable, sum(1 for want in wants.values() if want) or 1, locked_at)


async def drop(tx: Transaction, partner_id: str, holder: str) -> None:
    """Give back every slot of the holder."""
    await tx.execute("DELETE FROM partner_slots WHERE partner_id = ? AND holder = ?", (partner_id, holder))


async def holds(tx: Transaction) -> list[dict[str, object]]:
    """Every hold on slots not yet expired, per partner (for operators and tests)."""
    now = await tx.clock()
    return await tx.fetchall(
        "SELECT partner_id, holder, held, wanted, expires FROM partner_slots WHERE expires > ?"
        " ORDER BY partner_id, holder",
        (now,),
    )
