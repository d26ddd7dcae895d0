"""What `gateway serve` looks for every ``watch_seconds``: deletion attestations that
fell overdue and an audit checkpoint that is late. Each becomes an event
(``attestation_overdue``, ``checkpoint_overdue``) once, across every instance: the
notice is written to ``ops_notices`` (a primary key) in the transaction that finds
it, and announced after it commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway.clock import isotime
from gateway.core import Gateway
from gateway.ops.checks import OVERDUE, audit_state
from gateway.plugin.events import Event
from gateway.storage import Transaction

log = logging.getLogger(__name__)


async def look(gw: Gateway) -> list[Event]:
    """One look; the events announced."""
    now = gw.now()
    at = isotime(now)
    events: list[Event] = []
    async with gw.db.transaction() as tx:
        for row in await tx.fetchall(
            f"SELECT partner_id, case_ref, case_token, deletion_due FROM assignments WHERE {OVERDUE}", (at,)
        ):
            key = f"attestation:{row['partner_id']}:{row['case_ref']}:{row['deletion_due']}"
            if await _first(tx, key, at):
                events.append(Event("attestation_overdue", at, row["partner_id"], row["case_token"],
                                    {"deletion_due": row["deletion_due"]}))  # fmt: skip
        audit = await audit_state(tx)
        if audit.overdue(now, gw.settings.checkpoint_max_lag_seconds):
            detail: dict[str, Any] = {
                "waiting": audit.size - audit.checkpoint_size,
                "lag_seconds": round(audit.lag(now)),
                "checkpoint_size": audit.checkpoint_size,
            }
            if await _first(tx, f"checkpoint:{audit.checkpoint_size}", at):
                events.append(Event("checkpoint_overdue", at, detail=detail))
        tx.after_commit(lambda: gw.emit(events))
    return events


async def _first(tx: Transaction, key: str, at: str) -> bool:
    return bool(
        await tx.execute("INSERT INTO ops_notices (key, at) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, at))
    )


async def run(gw: Gateway, stop: asyncio.Event) -> None:
    """Look every ``watch_seconds`` until ``stop``; a failed look is logged and retried."""
    while not stop.is_set():
        try:
            await look(gw)
        except Exception as exc:  # the watch must outlive a locked or unreachable database
            log.warning("operations watch: this look failed (%s)", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), gw.settings.watch_seconds)
