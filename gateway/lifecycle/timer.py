"""The retention timer of ``gateway serve``: a `retention run` every ``retention_seconds``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.core import Gateway
from gateway.lifecycle import retention

log = logging.getLogger(__name__)


async def run(gw: Gateway, stop: asyncio.Event, period: float) -> None:
    """Until ``stop`` is set, every ``period`` seconds purge what is due and move erasure
    requests on. Returns at once when the period is 0."""
    if period <= 0:
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period)
        if stop.is_set():
            return
        try:
            done = await retention.run(gw, actor="system")
        except Exception as exc:  # the timer must outlive a locked database or a missing key
            log.warning("retention timer: nothing purged this round (%s)", type(exc).__name__)
            continue
        if done.counts.total():
            log.info("retention run purged %s", {k: n for k, n in done.counts.by_kind.items() if n})
