"""A lane's side of the shared limits (:mod:`gateway.delivery.ratelimit`): before each
attempt a worker takes a concurrency slot of the lane's hold and a reserved send time.

The lane keeps its hold on slots with a keeper task: it asks the database for slots
when workers wait for one, renews the hold while it has any (at most every
``RENEW_MOST`` seconds, or a quarter of the lease), asks again soon while it holds
other than it wants (others may give back, or want some of its own; while it gets none
at all, after pauses from ``FIRST_PAUSE`` doubling up to ``POLL``), gives back what is
over its share as soon as its attempts are down to it, and gives all back once idle. A
lane whose last renewal took the partner's lock more than a lease ago starts
nothing until the keeper has renewed: its hold may have lapsed in the database (the
process stalled, the keeper was late), and another lane may hold the slots by now. The
slots taken before such a lapse are void: each is taken in an *epoch* of the hold, which
a renewal that took the lock past the lapse time starts anew (a renewal that took it in
time kept the slots: nobody else could take them meanwhile), and an attempt whose
epoch is over is not sent (:meth:`PartnerLimiter.holds`, asked by the adapter just
before the package leaves: :func:`gateway.plugin.adapter.before_sending`).
Send times are reserved by whichever worker finds none left, for the others too
(:func:`ratelimit.batch_size`), and the next ones as the last half of a batch goes
while packages wait.

A send time a worker takes more than ``STALE`` seconds after it came due is dropped (the
workers waited that long for slots, or the process stalled): sent now, such times
would bunch on top of the ones due now, and the partner would see more than its rate.
A dropped time is lost, which can only slow the partner's traffic. The workers that
waited for a batch take its times however late they wake: at most a batch goes late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from gateway.delivery import ratelimit
from gateway.errors import StorageError
from gateway.storage import Database
from schemas.partner import Limits

log = logging.getLogger(__name__)

#: Longest pause between renewals of a hold that is what the lane wants.
RENEW_MOST = 0.5
#: Pause between asks while the lane holds other than it wants.
POLL = 0.2
#: The first pause of a lane that got no slot at all (others hold every one), doubled
#: at each ask that again gets none, up to POLL: prompt while the others are giving back
#: its share, a few asks a second once they are not.
FIRST_PAUSE = 0.01
#: Seconds past its time after which a reserved send time is dropped, not used.
STALE = 0.05


class PartnerLimiter:
    def __init__(
        self, db: Database, partner_id: str, holder: str, limits: Limits, lease: float,
        backlog: Callable[[], int] = lambda: 0, on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """``holder``: this lane's name in the database, unique to it. ``backlog``: the
        lane's packages waiting for a worker (it wants slots for them too).
        ``on_change``: called when the lane's usable slots change."""
        self.db = db
        self.partner_id = partner_id
        self.holder = holder
        self.rate = limits.rate_per_second
        self.concurrency = limits.concurrency
        self.lease = lease
        self.backlog = backlog
        self.on_change = on_change
        self.usable = 0
        """Attempts this lane may have in flight now."""
        self.sharers = 1
        """Lanes (of all dispatchers) that want this partner's slots, this one included."""
        self.in_use = 0
        self._held = 0
        self._hold_until = 0.0
        """When the hold may lapse in the database (monotonic): a lease after its last
        renewal took the partner's lock (time spent waiting for the lock does not count).
        Past it, another lane may hold the slots: nothing starts here until the keeper
        has renewed (the keeper was late, or the process stalled)."""
        self._epoch = 0
        """Renewals that took the lock past ``_hold_until``: a slot taken in an earlier
        epoch may be another lane's by now."""
        self._asking = False
        self._pause = FIRST_PAUSE
        """The keeper's next pause while the lane gets no slot at all."""
        self._slot_waiters = 0
        self._token_waiters = 0
        self._times: deque[float] = deque()
        self._low = 0
        """Send times left when the next ones are reserved."""
        self._reserving: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._demand = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    def try_acquire(self) -> int | None:
        """Take a slot and a send time if both are there now, without waiting; the
        slot's epoch (see :meth:`holds`), or None."""
        now = time.monotonic()
        if self._asking or self.in_use >= self.usable or now >= self._hold_until:
            return None
        if not self._fresh(now) or self._times[0] > now:
            return None
        self._times.popleft()
        self.in_use += 1
        self._reserve_ahead()
        return self._epoch

    async def acquire(self) -> int:
        """Wait for a slot and then for a send time; the slot's epoch (see :meth:`holds`).
        :meth:`release` the slot after."""
        while True:
            await self._slot()
            epoch = self._epoch
            try:
                await self._send_time()
            except BaseException:
                self.release()
                raise
            if self.holds(epoch):
                return epoch
            self.release()  # the hold lapsed while waiting for the send time: ask again

    def holds(self, epoch: int) -> bool:
        """Whether a slot taken in ``epoch`` is still the lane's: the hold has not lapsed
        since (nor may it have lapsed and been renewed)."""
        return epoch == self._epoch and not self._lapsed()

    def release(self) -> None:
        self.in_use -= 1
        self._wake()
        if self.in_use == self.usable < self._held:
            self._demand.set()  # down to its share: give back the rest now

    async def aclose(self) -> None:
        """Stop the keeper and give back every slot (the lane's attempts are over)."""
        if self._reserving is not None:
            self._reserving.cancel()
        if self._keeper is not None:  # it may have asked: a hold may be there
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            try:
                async with self.db.transaction() as tx:
                    await ratelimit.drop(tx, self.partner_id, self.holder)
            except StorageError as exc:
                log.warning("partner %s: slots not given back (they expire): %s", self.partner_id, exc)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _slot(self) -> None:
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep())
        self._slot_waiters += 1
        try:
            while self._asking or self.in_use >= self.usable or self._lapsed():
                if not self._held or self._lapsed():
                    self._demand.set()  # an idle lane has work, or a hold to renew: ask now
                await self._changed.wait()
        finally:
            self._slot_waiters -= 1
        self.in_use += 1

    async def _send_time(self) -> None:
        self._token_waiters += 1
        try:
            while not self._fresh(time.monotonic()):
                if self._reserving is None:
                    self._reserving = asyncio.create_task(self._reserve())
                # Shielded: a worker that stops waiting does not cancel the others' batch.
                await asyncio.shield(self._reserving)
                if self._times:
                    # Just reserved: taken however late this worker woke, so that an
                    # event loop busier than STALE cannot drop every batch unsent.
                    break
        finally:
            self._token_waiters -= 1
        at = self._times.popleft()
        self._reserve_ahead()
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _lapsed(self) -> bool:
        return time.monotonic() >= self._hold_until

    def _fresh(self, now: float) -> bool:
        """Drop the send times more than ``STALE`` seconds past; whether one is left."""
        times = self._times
        while times and times[0] < now - STALE:
            times.popleft()
        return bool(times)

    def _reserve_ahead(self) -> None:
        """Reserve the next send times while the last of these go, if more is waiting:
        the workers then find them there instead of waiting for the round trip."""
        if self._reserving is None and len(self._times) <= self._low and self._token_waiters + self.backlog():
            self._reserving = asyncio.create_task(self._reserve())

    async def _reserve(self) -> None:
        try:
            count = ratelimit.batch_size(self.rate, self._token_waiters + self.backlog())
            self._low = count // 2
            async with self.db.transaction() as tx:
                now, times = await ratelimit.reserve(tx, self.partner_id, count, self.rate)
            local = time.monotonic()
            self._times.extend(local + at - now for at in times)
        except Exception as exc:  # the waiting workers ask again after a pause
            if isinstance(exc, StorageError):
                log.warning("partner %s: could not reserve send times: %s", self.partner_id, exc)
            else:
                log.exception("partner %s: could not reserve send times", self.partner_id)
            await asyncio.sleep(POLL)
        finally:
            self._reserving = None

    def _wanted(self) -> int:
        busy = self.in_use or self._slot_waiters or self.backlog()
        return self.concurrency if busy else 0

    async def _keep(self) -> None:
        while True:
            wanted = self._wanted()
            if not wanted and not self._held:
                self._demand.clear()
                if not self._wanted():
                    await self._demand.wait()
                continue
            await self._ask(wanted)
            if not self._held and not self._wanted():
                continue  # idle: wait for work
            if not self._held:
                # Wanted, none got: the waiting workers would ask again at once, as fast
                # as the database answers (thousands of write transactions a second).
                await asyncio.sleep(self._pause)
                self._pause = min(self._pause * 2, POLL)
                continue
            self._pause = FIRST_PAUSE
            settled = self._held == self.usable == wanted
            self._demand.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(RENEW_MOST, self.lease / 4) if settled else POLL):
                    await self._demand.wait()

    async def _ask(self, wanted: int) -> None:
        """One round trip: no attempt starts meanwhile, so that what the database is
        told is in use stays true until it answers."""
        self._asking = True
        try:
            async with self.db.transaction() as tx:
                got = await ratelimit.hold(
                    tx, self.partner_id, self.holder, wanted=wanted, in_use=self.in_use,
                    concurrency=self.concurrency, lease=self.lease,
                )
            self._held, usable, self.sharers = got.held, got.usable, got.sharers
            if got.locked_at >= self._hold_until:
                # Maybe renewed after it lapsed: the slots taken before may be another's.
                self._epoch += 1
            self._hold_until = got.locked_at + self.lease
        except Exception as exc:
            # Unknown whether the hold was renewed: start nothing until it is. The
            # keeper goes on (its silence would let the hold expire under the lane).
            if isinstance(exc, StorageError):
                log.warning("partner %s: could not renew its concurrency slots: %s", self.partner_id, exc)
            else:
                log.exception("partner %s: could not renew its concurrency slots", self.partner_id)
            usable = 0
            await asyncio.sleep(POLL)  # the next try after a pause, not at once in a loop
        finally:
            self._asking = False
        changed = usable != self.usable
        self.usable = usable
        self._wake()
        if changed:
            self.on_change()
