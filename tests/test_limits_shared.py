"""A partner's limits hold for the whole deployment: two `gateway dispatch` processes on one
database (PostgreSQL, or one SQLite file) send to one partner, which measures what it
receives.

The rate: in any window of W seconds the partner receives at most ``rate * W`` plus the
bucket's burst (``max(1, rate)``, one second's worth) plus four for arrival jitter
(the event loops of the test and of the dispatchers are busy; a send times one way
may land a little early or late). Concurrency: the partner never has more requests in
flight than the profile's ``concurrency``; when a dispatcher is killed (SIGKILL, no
clean-up), its slots come back after ``slot_lease_seconds`` and the survivor uses them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from gateway.config import load_settings
from gateway.core import Gateway
from gateway.delivery import outbox, ratelimit
from gateway.delivery.limiter import POLL, STALE, PartnerLimiter
from gateway.demo.partners import ThrowawayCA
from gateway.errors import NotSent
from gateway.onboarding import registry
from gateway.plugin.adapter import OutboundPackage, slot_held
from schemas.partner import Limits
from tests.helpers import reap
from tests.partners import PARTNER, Agency, Clock, agency_profile, init_workspace, place_many, serve
from tests.test_scale_out import wait_for

SLOT_LEASE = 2.0
JITTER = 4


@dataclass
class MeteredAgency(Agency):
    """The test agency, noting when each request arrives and how many are in flight."""

    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    peaks: list[tuple[float, int]] = field(default_factory=list)
    """(arrival, requests in flight with it) for each request."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self.in_flight += 1
        self.arrivals.append(now)
        self.peaks.append((now, self.in_flight))
        try:
            return await super().handle(request)
        finally:
            self.in_flight -= 1


@asynccontextmanager
async def metered_workspace(tmp_path: Path, limits: str) -> AsyncIterator[tuple[Gateway, MeteredAgency]]:
    ws = init_workspace(tmp_path / "ws")
    ca = ThrowawayCA(tmp_path / "ca")
    agency = MeteredAgency(private_jwk={}, bank_jwks=ws / "keys" / "bank" / "jwks.json", decrypt=False)
    async with serve(agency, ca.server_context("agency")):
        profile, agency.private_jwk = agency_profile(ws, agency.port, ca, limits=limits)
        gw = await Gateway.open(load_settings(ws), clock=Clock())
        try:
            await registry.add(gw, profile, actor="test")
            yield gw, agency
        finally:
            await gw.close()


async def dispatcher(gw: Gateway) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "GATEWAY_DISPATCH__LEASE_SECONDS": "10",
        "GATEWAY_DISPATCH__SLOT_LEASE_SECONDS": str(SLOT_LEASE),
        "GATEWAY_DISPATCH__IDLE_SECONDS": "0.2",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(gw.settings.base_dir), "dispatch",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def stop(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM; the number of packages it delivered."""
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return int(out.decode().split("delivered=")[1].split()[0])


async def delivered(gw: Gateway, count: int) -> bool:
    return (await outbox.counts(gw)).get("delivered") == count


def most_in_window(arrivals: list[float], window: float) -> int:
    """The most arrivals in any window of ``window`` seconds."""
    times = sorted(arrivals)
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - window:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_two_dispatchers_share_the_partners_rate(tmp_path: Path) -> None:
    rate, count = 20, 200
    limits = f"concurrency = 16\nrate_per_second = {rate}\ntimeout = 5"
    async with metered_workspace(tmp_path, limits) as (gw, agency):
        await place_many(gw, count)
        first, second = await dispatcher(gw), await dispatcher(gw)
        try:
            await wait_for(lambda: delivered(gw, count), timeout=120, every=0.2)
        finally:
            by_first, by_second = await stop(first), await stop(second)
    assert by_first + by_second == count and by_first > 20 and by_second > 20, "both must have sent"
    burst = max(1, rate)
    for window in (0.5, 1.0, 2.0, 4.0):
        got = most_in_window(agency.arrivals, window)
        assert got <= rate * window + burst + JITTER, f"{got} requests within {window} s"
    # The sustained rate, past the burst: what one process alone may send.
    spread = max(agency.arrivals) - min(agency.arrivals)
    assert (len(agency.arrivals) - burst) / spread <= rate * 1.05
    print(f"{count} packages in {spread:.1f} s: {by_first} + {by_second}; most in 1 s "
          f"{most_in_window(agency.arrivals, 1.0)}, in 2 s {most_in_window(agency.arrivals, 2.0)}")


async def test_two_dispatchers_share_the_concurrency_and_a_killed_ones_slots_return(tmp_path: Path) -> None:
    concurrency, count = 3, 120
    limits = f"concurrency = {concurrency}\nrate_per_second = 1000\ntimeout = 5"
    async with metered_workspace(tmp_path, limits) as (gw, agency):
        agency.delay = 0.15  # each request takes a while: the concurrency binds, not the rate
        await place_many(gw, count)
        first, second = await dispatcher(gw), await dispatcher(gw)
        try:
            await wait_for(lambda: both_hold(gw, agency), timeout=60)
            first.kill()  # SIGKILL: its hold on slots is left behind in the database
            await first.wait()
            killed_at = time.monotonic()
            await wait_for(lambda: delivered(gw, count), timeout=120, every=0.2)

            async def nothing_held() -> bool:  # the survivor gives back its slots once idle
                async with gw.db.transaction() as tx:
                    return not [h for h in await ratelimit.holds(tx) if h["held"]]

            await wait_for(nothing_held, timeout=5)
        finally:
            await reap(first)
            by_survivor = await stop(second)
    assert max(n for _, n in agency.peaks) <= concurrency, (
        "more requests in flight than allowed; (seconds after the kill, in flight) at each arrival: "
        f"{[(round(at - killed_at, 2), n) for at, n in agency.peaks]}"
    )
    # After the lease, the survivor has every slot: the partner sees it use all of them.
    after = [n for at, n in agency.peaks if at > killed_at + SLOT_LEASE + 0.5]
    assert after and max(after) == concurrency
    print(f"survivor delivered {by_survivor}; in flight at each arrival: {[n for _, n in agency.peaks]}")


async def both_hold(gw: Gateway, agency: MeteredAgency) -> bool:
    """Whether both dispatchers hold slots and the partner has had some requests."""
    async with gw.db.transaction() as tx:
        held = [h for h in await ratelimit.holds(tx) if h["held"]]
    return len(held) == 2 and len(agency.arrivals) >= 10


async def test_a_dispatcher_paused_past_its_slot_lease_asks_again_before_it_sends(tmp_path: Path) -> None:
    """A dispatcher stopped (SIGSTOP: a stalled machine, a debugger) for longer than the
    slot lease loses its hold, and the other takes every slot. When it goes on (SIGCONT)
    it starts nothing on the hold it had, but renews it first, and an attempt that had
    taken its slot before the stop (its request not yet sent: a TLS handshake under way)
    is not sent on it: the partner never has more requests in flight than the
    concurrency, and every package is delivered."""
    concurrency, count = 3, 150
    limits = f"concurrency = {concurrency}\nrate_per_second = 1000\ntimeout = 5"
    async with metered_workspace(tmp_path, limits) as (gw, agency):
        agency.delay = 0.15
        await place_many(gw, count)
        first, second = await dispatcher(gw), await dispatcher(gw)
        try:
            await wait_for(lambda: both_hold(gw, agency), timeout=60)
            first.send_signal(signal.SIGSTOP)
            await asyncio.sleep(SLOT_LEASE + 1)
            resumed = len(agency.arrivals)
            first.send_signal(signal.SIGCONT)
            await wait_for(lambda: delivered(gw, count), timeout=120, every=0.2)
        finally:
            if first.returncode is None:
                first.send_signal(signal.SIGCONT)
            by_first, by_second = await stop(first), await stop(second)
    assert by_first + by_second == count
    assert resumed < count, "the other went on alone while the first was stopped"
    assert max(n for _, n in agency.peaks) <= concurrency, (
        f"more requests in flight than allowed; in flight at each arrival: {[n for _, n in agency.peaks]}"
    )


async def test_holds_taken_side_by_side_never_exceed_the_concurrency(tmp_path: Path) -> None:
    """Many lanes of two instances ask at once (PostgreSQL: side by side in its pools):
    the slots they hold never add up to more than the partner's concurrency, they end
    up shared evenly, and a hold that is not renewed stops counting at its expiry."""
    async with metered_workspace(tmp_path, "concurrency = 5") as (gw, _):
        other = await Gateway.open(gw.settings)
        try:

            async def ask(db: Gateway, holder: str, wanted: int = 5, lease: float = 30) -> ratelimit.Hold:
                async with db.db.transaction() as tx:
                    return await ratelimit.hold(
                        tx, PARTNER, holder, wanted=wanted, in_use=0, concurrency=5, lease=lease
                    )

            lanes = [(gw if n % 2 else other, f"lane-{n}") for n in range(4)]
            for _ in range(3):
                got = await asyncio.gather(*(ask(db, holder) for db, holder in lanes))
                async with gw.db.transaction() as tx:
                    held = {h["holder"]: h["held"] for h in await ratelimit.holds(tx)}
                assert sum(held.values()) <= 5 and sum(g.held for g in got) <= 5
            assert sorted(held.values()) == [1, 1, 1, 2]
            # Three lanes stop without giving back; the fourth gets all once they expire.
            await asyncio.gather(*(ask(db, holder, lease=0.5) for db, holder in lanes[:3]))
            assert (await ask(*lanes[3])).usable < 5
            await asyncio.sleep(0.6)
            assert (await ask(*lanes[3])).usable == 5
        finally:
            await other.close()


async def test_send_times_reserved_side_by_side_keep_the_rate(tmp_path: Path) -> None:
    async with metered_workspace(tmp_path, "") as (gw, _):
        other = await Gateway.open(gw.settings)
        try:

            async def reserve(db: Gateway) -> list[float]:
                async with db.db.transaction() as tx:
                    return (await ratelimit.reserve(tx, PARTNER, 5, rate=50))[1]

            batches = await asyncio.gather(*(reserve(gw if n % 2 else other) for n in range(40)))
        finally:
            await other.close()
    times = sorted(t for batch in batches for t in batch)
    # 200 sends at 50/s: after the burst of 50, one every 20 ms, whoever reserved them.
    assert times[-1] - times[0] >= (200 - 50) / 50 - 0.01
    assert most_in_window(times, 1.0) <= 50 + 50


async def test_send_times_that_came_due_while_waiting_for_a_slot_are_not_sent_late(tmp_path: Path) -> None:
    """A lane's first attempts hold every slot for a while (slow first connections, a
    stalled process) while the send times it reserved ahead come due: those times are
    not used late, on top of the burst the partner's bucket allows once the slots are
    back, and every window still holds at most the burst plus the rate."""
    rate, concurrency, count, slow = 20, 8, 40, 0.6
    async with metered_workspace(tmp_path, "") as (gw, _):
        waiting = count
        limiter = PartnerLimiter(
            gw.db, PARTNER, "lane-1", Limits(concurrency=concurrency, rate_per_second=rate), lease=5,
            backlog=lambda: waiting,
        )
        sends: list[float] = []

        async def attempt(number: int) -> None:
            nonlocal waiting
            await limiter.acquire()
            waiting -= 1
            sends.append(time.monotonic())
            await asyncio.sleep(slow if number < concurrency else 0)
            limiter.release()

        try:
            await asyncio.wait_for(asyncio.gather(*(attempt(n) for n in range(count))), 30)
        finally:
            await limiter.aclose()
    assert len(sends) == count
    assert max(sends[concurrency:]) - min(sends) > slow
    burst = max(1, rate)
    for window in (0.05, 0.5, 1.0, 2.0):
        got = most_in_window(sends, window)
        assert got <= rate * window + burst, f"{got} sends within {window} s"


async def test_a_lane_on_a_busy_event_loop_still_sends(tmp_path: Path) -> None:
    """A neighbour holds the event loop longer than a send time may go stale, again and
    again: the workers that waited for a batch of send times still take them (they are
    not dropped as stale forever), and every attempt goes. (Each step of the loop takes
    the neighbour's pause: a few attempts are enough, and slow.)"""
    count = 4
    async with metered_workspace(tmp_path, "") as (gw, _):
        waiting = count
        limiter = PartnerLimiter(
            gw.db, PARTNER, "lane-1", Limits(concurrency=2, rate_per_second=1000), lease=5,
            backlog=lambda: waiting,
        )
        done = asyncio.Event()

        async def neighbour() -> None:  # a blocking call between every two steps of the loop
            while not done.is_set():
                time.sleep(STALE * 1.6)
                await asyncio.sleep(0)

        async def attempt() -> None:
            nonlocal waiting
            await limiter.acquire()
            waiting -= 1
            limiter.release()

        busy = asyncio.ensure_future(neighbour())
        try:
            await asyncio.wait_for(asyncio.gather(*(attempt() for _ in range(count))), 60)
        finally:
            done.set()
            await busy
            await limiter.aclose()
    assert waiting == 0


#: Another dispatcher's lane, in a process of its own: asks for both slots of the partner
#: until it has them (the first lane's hold has lapsed), keeps them for a minute, says so.
_TAKE_BOTH = """
import asyncio, os
from gateway.delivery import ratelimit
from gateway.storage import open_database

async def main():
    db = await open_database(os.environ["TEST_DATABASE_URL"])
    try:
        while True:
            async with db.transaction() as tx:
                got = await ratelimit.hold(tx, os.environ["TEST_PARTNER"], "lane-b", wanted=2, in_use=2,
                                           concurrency=2, lease=60)
            if got.usable == 2:
                print("both", flush=True)
                return
            await asyncio.sleep(0.05)
    finally:
        await db.close()

asyncio.run(main())
"""


async def test_a_lane_whose_hold_lapsed_starts_nothing_before_it_has_renewed(tmp_path: Path) -> None:
    """A lane's process stalls past its slot lease (its keeper cannot renew), and another
    dispatcher takes every slot meanwhile. When the lane goes on, a new attempt waits for
    the lane's renewed share (none, now) instead of starting on the hold it had."""
    lease = 0.5
    async with metered_workspace(tmp_path, "") as (gw, _):
        lane = PartnerLimiter(
            gw.db, PARTNER, "lane-a", Limits(concurrency=2, rate_per_second=1000), lease=lease,
            backlog=lambda: 1,
        )
        try:
            await lane.acquire()  # the lane holds both slots
            lane.release()
            env = {**os.environ, "TEST_DATABASE_URL": gw.settings.database_url, "TEST_PARTNER": PARTNER}
            other = subprocess.Popen([sys.executable, "-c", _TAKE_BOTH], env=env, stdout=subprocess.PIPE)
            try:
                # This process stalls (no await: the lane's keeper cannot run) until the
                # other has both slots.
                out, _ = other.communicate(timeout=60)
            finally:
                if other.poll() is None:
                    other.kill()
            assert other.returncode == 0 and out.strip() == b"both"
            attempt = asyncio.ensure_future(lane.acquire())  # first thing once going on
            await asyncio.sleep(0.5)
            assert not attempt.done(), "an attempt started on a hold that had lapsed"
            async with gw.db.transaction() as tx:
                await ratelimit.drop(tx, PARTNER, "lane-b")
            await asyncio.wait_for(attempt, 10)  # the slots given back: the lane's share again
            lane.release()
        finally:
            await lane.aclose()


async def test_a_lane_that_gets_no_slots_asks_again_at_a_falling_pace(tmp_path: Path) -> None:
    """Another lane holds every slot: a lane with work waits for its share and asks the
    database again soon, then less and less often (pauses from ``FIRST_PAUSE`` doubling
    up to ``POLL``), not as fast as the database answers: each ask is a write
    transaction, which every other dispatcher waits for (a lane did 22,905 a second on
    SQLite, 1,366 on PostgreSQL, before the pause)."""
    async with metered_workspace(tmp_path, "") as (gw, _):
        async with gw.db.transaction() as tx:
            await ratelimit.hold(tx, PARTNER, "lane-b", wanted=2, in_use=2, concurrency=2, lease=60)
        lane = PartnerLimiter(
            gw.db, PARTNER, "lane-a", Limits(concurrency=2, rate_per_second=1000), lease=5,
            backlog=lambda: 1,
        )
        attempt = asyncio.ensure_future(lane.acquire())
        renewals = set()  # each ask writes the lane's row with a new expiry
        try:
            watched = time.monotonic() + 1.5
            while time.monotonic() < watched:
                async with gw.db.transaction() as tx:
                    mine = [h["expires"] for h in await ratelimit.holds(tx) if h["holder"] == "lane-a"]
                renewals.update(mine)
                await asyncio.sleep(0.005)
            assert not attempt.done(), "the lane started an attempt on a slot another holds"
            # Its share once the other gives back: asked for within a pause.
            async with gw.db.transaction() as tx:
                await ratelimit.drop(tx, PARTNER, "lane-b")
            await asyncio.wait_for(attempt, POLL + 1)
            lane.release()
        finally:
            attempt.cancel()
            await lane.aclose()
    # Asked at 0, 0.01, 0.03, 0.07, 0.15, 0.31, then every 0.2 s: 11 asks in 1.5 s.
    assert 3 <= len(renewals) <= 1.5 / POLL + 6, f"{len(renewals)} asks within 1.5 s"


async def test_an_attempt_whose_slot_lapsed_before_it_left_is_not_sent(tmp_path: Path) -> None:
    """A lane takes a slot; its process stalls past the lease before the request leaves;
    another dispatcher takes every slot; the lane renews as soon as it goes on. The
    request is not sent (the slot was taken before the lapse: it may be the other's
    now), the partner sees nothing, and a slot taken later is good."""
    lease = 0.5
    async with metered_workspace(tmp_path, "") as (gw, agency):
        lane = PartnerLimiter(
            gw.db, PARTNER, "lane-a", Limits(concurrency=2, rate_per_second=1000), lease=lease,
            backlog=lambda: 1,
        )
        record = await registry.get(gw, PARTNER)
        adapter = gw.adapters[record.profile.adapter].for_profile(record.profile, gw.adapter_resources)
        package = OutboundPackage("pkg_test", "C-1", "collection", "jwe", "a.b.c.d.e", {})
        try:
            epoch = await lane.acquire()
            env = {**os.environ, "TEST_DATABASE_URL": gw.settings.database_url, "TEST_PARTNER": PARTNER}
            other = subprocess.Popen([sys.executable, "-c", _TAKE_BOTH], env=env, stdout=subprocess.PIPE)
            try:
                out, _ = other.communicate(timeout=60)  # this process stalls meanwhile (no await)
            finally:
                if other.poll() is None:
                    other.kill()
            assert other.returncode == 0 and out.strip() == b"both"

            async def renewed() -> bool:  # the lane's row again: its keeper went on
                async with gw.db.transaction() as tx:
                    return any(h["holder"] == "lane-a" for h in await ratelimit.holds(tx))

            await wait_for(renewed, timeout=10, every=0.05)
            assert not lane.holds(epoch)
            with slot_held(functools.partial(lane.holds, epoch)), pytest.raises(NotSent):
                await adapter.deliver(package)
            assert agency.arrivals == []
            lane.release()

            async with gw.db.transaction() as tx:
                await ratelimit.drop(tx, PARTNER, "lane-b")
            epoch = await asyncio.wait_for(lane.acquire(), 10)
            with slot_held(functools.partial(lane.holds, epoch)):
                await adapter.deliver(package)
            assert len(agency.arrivals) == 1
            lane.release()
        finally:
            await lane.aclose()
            await adapter.aclose()


async def test_time_spent_waiting_for_the_partners_lock_does_not_void_a_lanes_slots(tmp_path: Path) -> None:
    """Another dispatcher keeps the partner's lock most of the time (1.2 s at a time, then
    0.3 s free): each renewal of the lane waits for it, longer than its pause between
    renewals. A renewal that took the lock in time kept the slots (nobody else could take
    them meanwhile): the slot the lane took before stays its own all along. Counting
    the lease from the start of each renewal, wait included, voided it every cycle."""
    lease = 2.0
    async with metered_workspace(tmp_path, "") as (gw, _):
        other = await Gateway.open(gw.settings)
        lane = PartnerLimiter(
            gw.db, PARTNER, "lane-a", Limits(concurrency=2, rate_per_second=1000), lease=lease,
            backlog=lambda: 1,
        )
        stop = asyncio.Event()

        async def blocker() -> None:
            while not stop.is_set():
                async with other.db.transaction() as tx:
                    await ratelimit.hold(tx, PARTNER, "blocker", wanted=0, in_use=0, concurrency=2, lease=1)
                    await asyncio.sleep(1.2)
                await asyncio.sleep(0.3)

        lost: list[float] = []
        busy = None
        try:
            epoch = await lane.acquire()
            busy = asyncio.ensure_future(blocker())
            started = time.monotonic()
            while time.monotonic() < started + 5:
                if not lane.holds(epoch):
                    lost.append(round(time.monotonic() - started, 2))
                await asyncio.sleep(0.02)
            lane.release()
        finally:
            stop.set()
            if busy is not None:
                await busy
            await lane.aclose()
            await other.close()
    assert not lost, f"the slot was void at (seconds): {lost}"
