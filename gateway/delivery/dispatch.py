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
are written by one writer task: it stores, in one transaction, every result that came in
while attempts were in flight, up to ``batch`` of them or ``GROUP_WAIT`` seconds, and at
once when nothing else is in flight or a failure is among them (the breaker must see it
before the lane sends again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.config import DispatchSettings
from gateway.core import Gateway
from gateway.delivery import breaker, outbox
from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.limiter import PartnerLimiter
from gateway.errors import GatewayError, PartnerTimeout
from gateway.onboarding import registry
from gateway.plugin.adapter import Adapter, OutboundPackage, Receipt
from gateway.supervision.redact import redact, values_of

log = logging.getLogger(__name__)

#: Longest a result waits for others to share its transaction. A crash in that time
#: loses no package: its lease expires and it is sent again, with the same idempotency key.
GROUP_WAIT = 0.05


@dataclass(frozen=True)
class Options:
    lease: float = 120.0
    """Seconds a claim is held; a dead worker's packages are claimed again after it."""
    batch: int = 50
    """Most packages claimed in one transaction."""
    idle: float = 2.0
    """Longest sleep of a lane with nothing due."""
    refresh: float = 15.0
    """Seconds between looks for new or changed partners (``run`` only)."""
    slot_lease: float = 10.0
    """Seconds a lane's hold on a partner's concurrency slots lasts unless renewed."""
    breaker: BreakerPolicy | None = None
    """The breaker's policy; None: the workspace's (``[breaker]`` in gateway.toml)."""

    @property
    def slot_lease_for_claims(self) -> float:
        """The slot lease, at most half the claims' lease: a lane waiting for the slots
        of a killed dispatcher must not outwait the leases of the packages it holds."""
        return min(self.slot_lease, self.lease / 2)

    @classmethod
    def from_settings(cls, settings: DispatchSettings, **overrides: Any) -> Options:
        """The workspace's ``[dispatch]`` settings (gateway.toml, ``GATEWAY_DISPATCH__*``),
        with ``overrides`` (a command's flags) over them."""
        base = {
            "lease": settings.lease_seconds,
            "batch": settings.batch,
            "idle": settings.idle_seconds,
            "refresh": settings.refresh_seconds,
            "slot_lease": settings.slot_lease_seconds,
        }
        return cls(**{**base, **overrides})


@dataclass
class Stats:
    delivered: int = 0
    retry_wait: int = 0
    dead: int = 0
    started: float = field(default_factory=time.monotonic)

    def count(self, state: str) -> None:
        setattr(self, state, getattr(self, state) + 1)

    @property
    def rate(self) -> float:
        return self.delivered / max(time.monotonic() - self.started, 1e-9)


class Dispatcher:
    def __init__(self, gw: Gateway, options: Options | None = None) -> None:
        self.gw = gw
        self.options = options or Options.from_settings(gw.settings.dispatch)
        self.policy = self.options.breaker or gw.settings.breaker
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self.lanes: dict[str, Lane] = {}
        self._pending: list[outbox.Outcome] = []
        self._failed = False
        self.sending = 0
        """Attempts under way in every lane, whose results the writer may wait for."""
        self._wake = asyncio.Event()
        self._written = asyncio.Event()
        self._written.set()
        self._writer: asyncio.Task[None] | None = None

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
                await _wait(self.stopping, self.options.refresh)
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

    async def record(self, result: outbox.Outcome) -> None:
        """Hand one attempt's result to the writer. A failure waits until it is stored,
        so the breaker has seen it before this worker sends again; so does everyone
        when results pile up faster than the database takes them."""
        self._pending.append(result)
        self._failed = self._failed or result.signal == "failure"
        self._written.clear()
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop())
        if result.signal == "failure" or len(self._pending) > 10 * self.options.batch:
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

    async def _gather(self) -> None:
        """Let the results of attempts under way join the group (see the module docstring)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + GROUP_WAIT
        while len(self._pending) < self.options.batch and self.sending and not self._failed:
            left = until - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            await _wait(self._wake, left)

    async def _store(self, batch: list[outbox.Outcome]) -> None:
        """Store one batch; nothing it raises may end the writer, whose silence would
        leave every worker waiting for its failure to be stored."""
        try:
            held_back = await outbox.finish(self.gw, self.owner, batch, self.policy)
            for partner_id in held_back:
                # Claimed ahead but not sent: back to the outbox, so the breaker holds
                # them, not this process's queue.
                if lane := self.lanes.get(partner_id):
                    await lane.halt()
        except Exception:
            # The leases expire and the packages are sent again; partners dedupe.
            log.exception("could not store %d attempt results", len(batch))

    async def _shutdown(self) -> None:
        await self.flushed()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
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
                unsent.append(item.claimed.package.package_id)
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
        """How many packages to hold claimed: what the lane sends in half a lease at the
        pace it measured (its share of the rate limit, or its usable slots' attempts of
        the average latency), at least twice its usable slots, at most two claims of
        ``batch``. Large claims cost fewer transactions; a crash strands no more than
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
        return max(floor, min(2 * self.d.options.batch, int(pace * self.d.options.lease / 2)))

    async def _refill(self, cutoff: str | None) -> None:
        while not self.done:
            self.changed.clear()
            ahead = self.ahead()
            want = min(ahead - self.queue.qsize() - self.busy, self.d.options.batch)
            # Refill at half of it left, so the workers never run dry (none if the lane's
            # share of the slots shrank below what it holds).
            if self.queue.qsize() > ahead // 2 or want < 1:
                await _wait(self.changed, None)
                continue
            lease = self.d.options.lease
            claim = await outbox.claim(
                self.d.gw, self.partner_id, self.d.owner, want, lease, cutoff,
                probe_seconds=breaker.probe_lease(self.limits.timeout),
            )
            self.d.stats.dead += claim.expired + claim.refused
            lease_ends = time.monotonic() + lease
            for claimed in claim.packages:
                self.queue.put_nowait(Held(claimed, lease_ends))
            if claim.packages or claim.held or claim.refused:
                continue  # held or refused ones may have hidden more that are due
            # Nothing more due: look again once what is held is sent (results may let
            # more through: a probe passed), or, serving, at the next due time.
            if self.queue.qsize() or self.busy:
                await self._drained(None if cutoff is not None else self._sleep_for(claim.wake_at))
            elif cutoff is None:
                await _wait(self.ended, self._sleep_for(claim.wake_at))
            elif self.d.all_written:
                return
            else:
                await self.d.flushed()

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
                # Not sent if stopping, nor if the lease could end during the attempt
                # (another dispatcher may claim it then): back to the outbox.
                sent = False
                if self._in_lease(held) and await self._token():
                    try:
                        if self._in_lease(held):
                            sent = True
                            await self._send(held.claimed)
                    finally:
                        self.limiter.release()
                if not sent:
                    await outbox.unclaim(self.d.gw, self.d.owner, [held.claimed.package.package_id])
            finally:
                self.busy -= 1
                self.changed.set()

    def _in_lease(self, held: Held) -> bool:
        """Whether an attempt started now ends within the claim's lease: it has more
        than the attempt timeout left (or half the lease, if that is shorter)."""
        margin = min(self.limits.timeout, self.d.options.lease / 2)
        return held.lease_ends - time.monotonic() > margin

    async def _token(self) -> bool:
        """Take a slot and a send time of the shared limits; False if the lane ends first
        (a slow rate must not hold a stopping dispatcher)."""
        if self.done:
            return False
        if self.limiter.try_acquire():
            return True
        token = asyncio.ensure_future(self.limiter.acquire())
        ended = asyncio.ensure_future(self.ended.wait())
        await asyncio.wait((token, ended), return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if token.done():
            return True
        token.cancel()
        return False

    def _sleep_for(self, wake_at: str | None) -> float:
        idle = self.d.options.idle
        if wake_at is None:
            return idle
        due = datetime.fromisoformat(wake_at.replace("Z", "+00:00"))
        return min(max((due - self.d.gw.now()).total_seconds(), 0.01), idle)

    async def _send(self, claimed: outbox.Claimed) -> None:
        started = self.d.gw.now()
        t0 = time.perf_counter()
        self.d.sending += 1
        try:
            result = await self._attempt(claimed.package)
        finally:
            self.d.sending -= 1
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
        await self.d.record(outcome)

    async def _attempt(self, package: OutboundPackage) -> Receipt | Exception:
        """One delivery, its answer or error, within the attempt timeout. At the timeout
        the slot is free even if the adapter's clean-up (an SMTP QUIT, a TLS close)
        takes longer: that goes on apart, and the lane waits for it when it closes."""
        task = asyncio.ensure_future(self.adapter.deliver(package))
        try:
            done, _ = await asyncio.wait((task,), timeout=self.limits.timeout)
        except BaseException:
            task.cancel()
            raise
        if not done:
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


def _forget(task: asyncio.Future[Any]) -> None:
    """An abandoned attempt's end is of no interest (its result is recorded already)."""
    if not task.cancelled():
        task.exception()


async def _wait(event: asyncio.Event, timeout: float | None) -> None:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass
