"""The checkpoint timer: "every N entries or T seconds", and one more at shutdown.

While a command that appends runs (``serve``, ``dispatch``, ``place``), every
``audit_checkpoint_seconds`` it calls `checkpoint_now`, which signs a checkpoint only
when the log has entries beyond the latest one; an idle log gets no new checkpoint rows.
Every N entries is handled by `log.append` itself. `upkeep` runs the timer and the
witness submissions (`gateway.audit.witnessing`) beside the command, and with
``final`` signs and submits once more as it stops: so an entry stays unsigned at most T
seconds while such a command runs, and none is left unsigned by one that stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from gateway.audit import log as audit_log
from gateway.audit import witnessing
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


@contextlib.asynccontextmanager
async def upkeep(
    db: Database,
    signer: LogSigner,
    period: float,
    witnesses: Sequence[witnessing.Target] = (),
    *,
    final: bool = False,
) -> AsyncIterator[None]:
    """The checkpoint timer and the witness submissions for as long as the block runs;
    with `final`, a last checkpoint (if the log grew) and submission after it."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run(db, signer, stop, period)),
        asyncio.create_task(witnessing.run(db, witnesses, stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if final:
            await _last_round(db, signer, witnesses)


async def _last_round(db: Database, signer: LogSigner, witnesses: Sequence[witnessing.Target]) -> None:
    record = await tick(db, signer)
    if record is not None:
        log.info("audit checkpoint at shutdown: size %d", record.size)
    try:
        outcomes = await witnessing.submit_all(db, witnesses)
    except Exception as exc:  # shutting down: say so, do not hang or raise
        log.warning("audit witnesses at shutdown: not submitted (%s)", type(exc).__name__)
        return
    for outcome in outcomes:
        if not outcome.ok:
            log.warning("audit witness %s at shutdown: %s", outcome.witness, outcome.detail)
