"""The dispatcher: asyncio workers that take due packages from the outbox to partners.

One lane per partner holds that partner's adapter and its side of the partner's limits
(at most ``limits.concurrency`` attempts in flight and ``rate_per_second``, counted for
every dispatcher together in the database: :mod:`gateway.delivery.ratelimit`).
Everything a crash must not lose lives in the database: claims are leases, retries are
rows with a ``next_attempt_at``, the circuit breaker is ``partner_state``. A lane that
finds nothing due sleeps until the next due time (at most ``idle`` seconds, so packages
placed by other processes are picked up), never spins.

Claims and results go in groups. A lane holds claimed packages ahead, as many as it can
send well within their lease at the pace it measures (its rate limit, its concurrency
and the partner's latency), so one claim transaction takes tens of packages; a package
whose lease would end before its attempt could is given back unsent. Attempt results
are stored in groups by one writer task (:mod:`gateway.delivery.results`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.core import Gateway
from gateway.delivery import breaker, outbox
from gateway.delivery.limiter import PartnerLimiter
from gateway.delivery.options import Options, Stats
from gateway.delivery.results import ResultWriter, wait_set
from gateway.errors import GatewayError, NotSent, PartnerTimeout
from gateway.onboarding import registry
from gateway.plugin.adapter import Adapter, OutboundPackage, Receipt, slot_held
from gateway.supervision.redact import redact, values_of

log = logging.getLogger(__name__)

#: Seconds kept, past an attempt's timeout, for its result to be grouped and stored
#: before the claim's lease ends (`GROUP_WAIT` and a transaction, with room to spare).
STORE_ALLOWANCE = 2.0


class Dispatcher:
    def __init__(self, gw: Gateway, options: Options | None = None) -> None:
        self.gw = gw
        self.options = options or Options.from_settings(gw.settings.dispatch)
        self.policy = self.options.breaker or gw.settings.breaker
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self.lanes: dict[str, Lane] = {}
        self.results = ResultWriter(gw, self.owner, self.policy, self.options.batch, self._halt)

    async def run_once(self) -> Stats:
        """Send everything due now (and leases expired by now), then return."""
        cutoff = outbox.isotime(self.gw.now())
        for record in await registry.list_all(self.gw):
            # Every partner gets a lane: an inactive one is sent only recall notices.
            if lane := self._lane(record):
                self.lanes[record.id] = lane
        try:
            await asyncio.gather(*(lane.run(cutoff) for lane in self.lanes.values()))
        finally:
            await self._shutdown()
        return self.stats

    async def run(self) -> Stats:
        """Send until :meth:`stop`; then finish attempts in flight and give back leases."""
        lanes = self.lanes
        tasks: list[asyncio.Task[None]] = []
        try:
            while not self.stopping.is_set():
                for record in await registry.list_all(self.gw):
                    current = lanes.get(record.id)
                    if current and current.digest == record.profile_digest:
                        continue
                    if current:  # the profile changed: a new adapter takes over
                        current.retire()
                    lane = self._lane(record)
                    if lane:
                        lanes[record.id] = lane
                        tasks.append(asyncio.create_task(lane.run(None)))
                await wait_set(self.stopping, self.options.refresh)
            await asyncio.gather(*tasks)
        finally:
            await self._shutdown()
        return self.stats

    def stop(self) -> None:
        self.stopping.set()

    def _lane(self, record: registry.PartnerRecord) -> Lane | None:
        cls = self.gw.adapters.get(record.profile.adapter)
        try:
            if cls is None:
                raise ValueError(f"adapter {record.profile.adapter!r} is not installed")
            adapter = cls.for_profile(record.profile, self.gw.adapter_resources)
        except ValueError as exc:
            log.error("partner %s skipped: %s (fix the profile, `gateway partners add --update`)",
                      record.id, exc)
            return None
        return Lane(self, record, adapter)

    async def _halt(self, partner_id: str) -> None:
        if lane := self.lanes.get(partner_id):
            await lane.halt()

    async def _shutdown(self) -> None:
        await self.results.close()
        released = await outbox.release(self.gw, self.owner)
        if released:
            log.warning("gave back %d leases of unfinished attempts", released)


class Lane:
    """One partner's worker pool: a refill loop claims packages ahead in batches (see
    :meth:`ahead`), ``concurrency`` workers send them, each send first taking a slot and
    a send time from the partner's limits, shared with other dispatchers."""

    def __init__(self, dispatcher: Dispatcher, record: registry.PartnerRecord, adapter: Adapter) -> None:
        self.d = dispatcher
        self.partner_id = record.id
        self.digest = record.profile_digest
        self.limits = record.profile.limits
        self.adapter = adapter
        self.queue: asyncio.Queue[Held | None] = asyncio.Queue()
        self.busy = 0
        self.latency: float | None = None
        """Seconds an attempt takes, a moving average (None: none made yet)."""
        self.changed = asyncio.Event()
        self.limiter = PartnerLimiter(
            dispatcher.gw.db, record.id, f"{dispatcher.owner}:{uuid.uuid4().hex[:8]}", self.limits,
            dispatcher.options.slot_lease_for_claims, backlog=self.queue.qsize, on_change=self.changed.set,
        )
        self.ended = asyncio.Event()
        """Set once the lane is retired or the dispatcher stops."""
        self._cleanups: set[asyncio.Future[Receipt]] = set()

    def retire(self) -> None:
        self.ended.set()
        self.changed.set()

    @property
    def done(self) -> bool:
        return self.ended.is_set() or self.d.stopping.is_set()

    async def run(self, cutoff: str | None) -> None:
        """Claim and send until retired; with ``cutoff``, until nothing due by then is left.
        On the way out, attempts in flight finish and claimed but unsent packages go back."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self.limits.concurrency)]
        stop_watch = asyncio.create_task(self._watch_stop())
        try:
            await self._refill(cutoff)
        finally:
            stop_watch.cancel()
            await self.halt()
            for _ in workers:
                self.queue.put_nowait(None)
            await asyncio.gather(*workers)
            await self.limiter.aclose()
            if self._cleanups:  # attempts abandoned at their timeout, still closing
                await asyncio.wait(set(self._cleanups), timeout=self.limits.timeout)
            await self.adapter.aclose()

    async def halt(self) -> None:
        """Give back what is claimed but not yet sent (stopping, or the breaker opened).
        The workers' stop markers stay in the queue: the breaker may open while the lane
        stops, and a worker must still find its marker."""
        unsent, markers = [], 0
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is None:
                markers += 1
            else:
                unsent.append(item.claimed)
        for _ in range(markers):
            self.queue.put_nowait(None)
        self.changed.set()
        if unsent:
            await outbox.unclaim(self.d.gw, self.d.owner, unsent)

    async def _watch_stop(self) -> None:
        await self.d.stopping.wait()
        self.ended.set()
        self.changed.set()

    def ahead(self) -> int:
        """How many packages to hold claimed: what the lane starts, at the pace it
        measured (its share of the rate limit, or its usable slots' attempts of the
        average latency), in four fifths of the time a claimed package may still start
        (the lease less `_margin`); at least twice its usable slots, at most two claims
        of ``batch``. Large claims cost fewer transactions; a crash strands no more than
        the lease. The limits are shared with other dispatchers' lanes: a lane without
        slots claims two, and asks for some."""
        slots = self.limiter.usable
        if not slots:
            return 2
        floor = 2 * slots
        if self.latency is None:
            return floor
        rate = self.limits.rate_per_second / self.limiter.sharers
        pace = min(slots / max(self.latency, 1e-3), rate)
        window = self.d.options.lease - self._margin()
        return max(floor, min(2 * self.d.options.batch, int(pace * window * 0.8)))

    async def _refill(self, cutoff: str | None) -> None:
        while not self.done:
            self.changed.clear()
            ahead = self.ahead()
            want = min(ahead - self.queue.qsize() - self.busy, self.d.options.batch)
            # Refill at half of it left, so the workers never run dry (none if the lane's
            # share of the slots shrank below what it holds).
            if self.queue.qsize() > ahead // 2 or want < 1:
                await wait_set(self.changed, None)
                continue
            lease = self.d.options.lease
            # The lease counts from the claim's start in the database: count it from
            # before the call here, so the lane's idea of it never runs late.
            lease_ends = time.monotonic() + lease
            claim = await outbox.claim(
                self.d.gw, self.partner_id, self.d.owner, want, lease, cutoff,
                probe_seconds=breaker.probe_lease(self.limits.timeout),
            )
            self.d.stats.dead += claim.expired + claim.refused
            # On the disk before any of them leaves (`Database.sync`, one for the claim):
            # a power cut must not take back a placement, and its disclosure in the
            # audit log, whose package a partner has received. Queued at once all the
            # same, where the breaker opening can take them back (`halt`).
            synced = _synced(self.d.gw) if claim.packages else None
            for claimed in claim.packages:
                self.queue.put_nowait(Held(claimed, lease_ends, synced))
            if claim.packages or claim.held or claim.refused:
                continue  # held or refused ones may have hidden more that are due
            # Nothing more due: look again once what is held is sent (results may let
            # more through: a probe passed), or, serving, at the next due time.
            if self.queue.qsize() or self.busy:
                await self._drained(None if cutoff is not None else self._sleep_for(claim.wake_at))
            elif cutoff is None:
                await wait_set(self.ended, self._sleep_for(claim.wake_at))
            elif self.d.results.all_written:
                return
            else:
                await self.d.results.flushed()

    async def _drained(self, timeout: float | None) -> None:
        """Wait until nothing is held or under way, the lane ends, or ``timeout`` passes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while (self.queue.qsize() or self.busy) and not self.done:
                    self.changed.clear()
                    await self.changed.wait()

    async def _worker(self) -> None:
        while (held := await self.queue.get()) is not None:
            self.busy += 1  # before any await, so the refill loop never sees it idle
            try:
                if held.synced is not None:
                    await held.synced
                # Not sent if stopping, nor if the lease could end during the attempt
                # (another dispatcher may claim it then): back to the outbox. Stopped
                # before it left (its slot lapsed: `_send` is False), it takes a new slot.
                sent = False
                while not sent and self._in_lease(held) and (epoch := await self._token()) is not None:
                    try:
                        if not self._in_lease(held):
                            break
                        sent = await self._send(held.claimed, epoch)
                    finally:
                        self.limiter.release()
                if not sent:
                    await outbox.unclaim(self.d.gw, self.d.owner, [held.claimed])
            finally:
                self.busy -= 1
                self.changed.set()

    def _in_lease(self, held: Held) -> bool:
        """Whether an attempt started now, and its result's write, end within the claim's
        lease: it has more than the attempt timeout (or half the lease, if that is
        shorter) plus ``STORE_ALLOWANCE`` (or a quarter of the lease) left."""
        return held.lease_ends - time.monotonic() > self._margin()

    def _margin(self) -> float:
        lease = self.d.options.lease
        return min(self.limits.timeout, lease / 2) + min(STORE_ALLOWANCE, lease / 4)

    async def _token(self) -> int | None:
        """Take a slot and a send time of the shared limits; the slot's epoch, or None if
        the lane ends first (a slow rate must not hold a stopping dispatcher)."""
        if self.done:
            return None
        if (epoch := self.limiter.try_acquire()) is not None:
            return epoch
        token = asyncio.ensure_future(self.limiter.acquire())
        ended = asyncio.ensure_future(self.ended.wait())
        await asyncio.wait((token, ended), return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if token.done():
            return token.result()
        token.cancel()
        return None

    def _sleep_for(self, wake_at: str | None) -> float:
        idle = self.d.options.idle
        if wake_at is None:
            return idle
        due = datetime.fromisoformat(wake_at.replace("Z", "+00:00"))
        return min(max((due - self.d.gw.now()).total_seconds(), 0.01), idle)

    async def _send(self, claimed: outbox.Claimed, epoch: int) -> bool:
        """One attempt on a slot taken in ``epoch``, its outcome recorded; False if it
        stopped before the package left (the slot lapsed: no attempt is counted)."""
        started = self.d.gw.now()
        t0 = time.perf_counter()
        self.d.results.sending += 1
        try:
            with slot_held(functools.partial(self.limiter.holds, epoch)):
                result = await self._attempt(claimed.package)
        finally:
            self.d.results.sending -= 1
        if isinstance(result, NotSent):
            package_id = claimed.package.package_id
            log.warning("partner %s: package %s %s; it goes again", self.partner_id, package_id, result)
            return False
        seconds = time.perf_counter() - t0
        self.latency = seconds if self.latency is None else 0.8 * self.latency + 0.2 * seconds
        if isinstance(result, TimeoutError):
            result = PartnerTimeout(f"no answer within {self.limits.timeout:g} s")
        elif isinstance(result, Exception):
            exc = result
            if not isinstance(exc, GatewayError):
                # A bug: its frames for the developers, its message without personal data
                # (it may quote what the adapter was sending).
                sent = values_of(claimed.package.claims.get("data"))
                log.error(
                    "adapter %s failed on %s: %s: %s\n%s",
                    self.adapter.name,
                    claimed.package.package_id,
                    type(exc).__name__,
                    redact(str(exc), sent),
                    "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
                )
        outcome = outbox.judge(claimed, self.limits, started, seconds * 1000, result, self.d.gw.now())
        self.d.stats.count(outcome.state)
        await self.d.results.record(outcome)
        return True

    async def _attempt(self, package: OutboundPackage) -> Receipt | Exception:
        """One delivery, its answer or error, within the attempt timeout. At the timeout
        the slot is free even if the adapter's clean-up (an SMTP QUIT, a TLS close)
        takes longer: that goes on apart, and the lane waits for it when it closes."""
        # `asyncio.wait((task,), timeout=...)` with less on the way: one waiter, woken
        # by the attempt's end or by the timeout, whichever comes first.
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(self.adapter.deliver(package))
        waiter = loop.create_future()
        timer = loop.call_later(self.limits.timeout, _wake, waiter)
        task.add_done_callback(functools.partial(_wake, waiter))
        try:
            await waiter
        except BaseException:
            task.cancel()
            raise
        finally:
            timer.cancel()
        if not task.done():
            task.cancel()
            self._cleanups.add(task)
            task.add_done_callback(_forget)
            task.add_done_callback(self._cleanups.discard)
            return TimeoutError()
        exc = task.exception()
        if exc is None:
            return task.result()
        if not isinstance(exc, Exception):
            raise exc
        return exc


@dataclass(frozen=True)
class Held:
    """A package claimed ahead, waiting in its lane's queue."""

    claimed: outbox.Claimed
    lease_ends: float
    """`time.monotonic` at which the claim's lease ends."""
    synced: asyncio.Future[None] | None = None
    """Done once the claim, and what it claimed, is on the disk (`Database.sync`)."""


def _synced(gw: Gateway) -> asyncio.Future[None]:
    """`gw.db.sync()` under way; its error, if nobody is left to send (the breaker took
    the claim back), goes no further than this."""
    task = asyncio.ensure_future(gw.db.sync())
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


def _wake(waiter: asyncio.Future[None], *_: object) -> None:
    """Wake `Lane._attempt` (by its timer, or as the attempt's done callback)."""
    if not waiter.done():
        waiter.set_result(None)


def _forget(task: asyncio.Future[Any]) -> None:
    """An abandoned attempt's end is of no interest (its result is recorded already)."""
    if not task.cancelled():
        task.exception()
