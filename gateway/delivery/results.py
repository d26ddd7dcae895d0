"""The dispatcher's result writer: one task that stores attempt results in groups.

It stores, in one transaction, every result that came in while attempts were in flight,
up to ``batch`` of them or ``GROUP_WAIT`` seconds, and at once when nothing else is in
flight or a failure is among them (the breaker must see it before the lane sends again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.core import Gateway
from gateway.delivery import outbox
from gateway.delivery.breaker import BreakerPolicy

log = logging.getLogger(__name__)

#: Longest a result waits for others to share its transaction. A crash in that time
#: loses no package: its lease expires and it is sent again, with the same idempotency key.
GROUP_WAIT = 0.05


class ResultWriter:
    def __init__(
        self,
        gw: Gateway,
        owner: str,
        policy: BreakerPolicy,
        batch: int,
        held_back: Callable[[str], Awaitable[None]],
    ) -> None:
        """``held_back(partner_id)``: called when storing shows that a partner's packages
        claimed ahead must go back (its breaker opened)."""
        self.gw = gw
        self.owner = owner
        self.policy = policy
        self.batch = batch
        self.held_back = held_back
        self.sending = 0
        """Attempts under way in every lane, whose results the writer may wait for."""
        self._pending: list[outbox.Outcome] = []
        self._failed = False
        self._gathering = False
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._written.set()
        self._writer: asyncio.Task[None] | None = None

    async def record(self, result: outbox.Outcome) -> None:
        """Hand one attempt's result to the writer. A failure waits until it is stored,
        so the breaker has seen it before this worker sends again; so does everyone
        when results pile up faster than the database takes them."""
        self._pending.append(result)
        self._failed = self._failed or result.signal == "failure"
        self._written.clear()
        if not self._gathering or self._group_ready():
            # While a group gathers, only what ends the wait wakes the writer (not
            # every result: a wake-up and a new timeout each cost more than storing it).
            self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop())
        if result.signal == "failure" or len(self._pending) > 10 * self.batch:
            await self.flushed()

    @property
    def all_written(self) -> bool:
        return self._written.is_set()

    async def flushed(self) -> None:
        """Wait until every result handed over so far is stored."""
        await self._written.wait()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._gather()
                batch, self._pending, self._failed = self._pending, [], False
                await self._store(batch)
            self._written.set()

    def _group_ready(self) -> bool:
        """Whether the group gathered so far is to be stored now: full, holding a
        failure, or nothing else under way (no result to wait for)."""
        return len(self._pending) >= self.batch or self._failed or not self.sending

    async def _gather(self) -> None:
        """Let the results of attempts under way join the group (see the module docstring)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + GROUP_WAIT
        self._gathering = True
        try:
            while not self._group_ready():
                left = until - loop.time()
                if left <= 0:
                    return
                self._wake.clear()
                await wait_set(self._wake, left)
        finally:
            self._gathering = False

    async def _store(self, batch: list[outbox.Outcome]) -> None:
        """Store one batch; nothing it raises may end the writer, whose silence would
        leave every worker waiting for its failure to be stored."""
        try:
            halted = await outbox.finish(self.gw, self.owner, batch, self.policy)
            for partner_id in halted:
                # Claimed ahead but not sent: back to the outbox, so the breaker holds
                # them, not this process's queue.
                await self.held_back(partner_id)
        except Exception:
            # The leases expire and the packages are sent again; partners dedupe.
            log.exception("could not store %d attempt results", len(batch))


    async def close(self) -> None:
        """Wait for every result handed over, then end the writer task."""
        await self.flushed()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer


async def wait_set(event: asyncio.Event, timeout: float | None) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds have passed, whichever is first."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
