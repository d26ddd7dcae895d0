"""The checkpoint timer of ``gateway serve``: "every N entries or T seconds".

Every ``audit_checkpoint_seconds`` the served app calls `checkpoint_now`, which signs a
checkpoint only when the log has entries beyond the latest one; an idle log gets no new
checkpoint rows. Every N entries is handled by `log.append` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.audit import log as audit_log
from gateway.audit.signer import LogSigner
from gateway.storage import Database

log = logging.getLogger(__name__)


async def tick(db: Database, signer: LogSigner) -> audit_log.CheckpointRecord | None:
    """Sign a checkpoint if the log grew; on any error log it and return None."""
    try:
        return await audit_log.checkpoint_now(db, signer)
    except Exception as exc:  # the timer must outlive a locked database or a missing key
        # Only the error's type: the path reads sizes and hashes, but a driver's message
        # is not ours to vouch for.
        log.warning("audit checkpoint timer: no checkpoint this round (%s)", type(exc).__name__)
        return None


async def run(db: Database, signer: LogSigner, stop: asyncio.Event, period: float) -> None:
    """Until ``stop`` is set, every ``period`` seconds (the ``audit_checkpoint_seconds``
    setting) sign a checkpoint if the log has grown since the latest one. Returns at once
    when the period is 0."""
    if period <= 0:
        return
    last: int | None = None
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)
        if stop.is_set():
            return
        record = await tick(db, signer)
        if record is not None:
            if last is not None and record.size > last:
                log.info("audit checkpoint signed at size %d", record.size)
            last = record.size
