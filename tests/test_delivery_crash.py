"""The dispatcher as a process: killed mid-drain it loses nothing; stopped, it tidies up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.delivery import outbox
from tests.helpers import reap
from tests.partners import agency_workspace, place_many, rows

LIMITS = "concurrency = 8\nrate_per_second = 1000\ntimeout = 2"


async def start_dispatcher(ws: Path, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "GATEWAY_DISPATCH__LEASE_SECONDS": "2"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), "dispatch", "--quiet", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


@asynccontextmanager
async def dispatcher(ws: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A `gateway dispatch` process, killed on the way out if it is still running (so no
    dispatcher outlives a failed test)."""
    proc = await start_dispatcher(ws)
    try:
        yield proc
    finally:
        await reap(proc)


async def stopped(proc: asyncio.subprocess.Process, within: float) -> tuple[bytes, bytes]:
    """SIGTERM ``proc``; its stdout and stderr once it exits, at most ``within`` seconds."""
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.communicate(), within)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` with short bounded waits; the other side is another process."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_sigkill_mid_drain_loses_nothing_and_acts_once(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits=LIMITS) as (gw, agency, _):
        agency.delay = 0.01
        ids = await place_many(gw, 300)
        ws = Path(gw.settings.base_dir)
        proc = await start_dispatcher(ws)
        await until(lambda: len(agency.effects) >= 60)
        proc.kill()
        await proc.wait()
        seen = len(agency.effects)
        assert 0 < seen < 300, "the kill must land mid-drain"
        stranded = (await outbox.counts(gw)).get("sending", 0)
        # Leases of the killed worker expire after 2 s; then a cron-style run finishes.
        await asyncio.sleep(2.1)  # lets the leases expire: the behaviour under test
        rerun = await start_dispatcher(ws, "--once")
        out, err = await rerun.communicate()
        assert rerun.returncode == 0, err.decode()
        counts = await outbox.counts(gw)
        assert counts.get("delivered") == 300, (counts, out.decode(), err.decode())
        assert set(agency.effects) == set(ids)
        assert set(agency.effects.values()) == {1}, "a package acted on twice"
        resent = sum(1 for n in agency.requests.values() if n > 1)
        abandoned = await rows(gw, "SELECT COUNT(*) AS n FROM attempts WHERE outcome = 'abandoned'")
        # Exactly the packages the killed worker left under its leases (in flight, claimed
        # ahead, or sent with the result not yet stored) are recorded as abandoned; only
        # those can have been sent twice, and the partner's dedupe absorbed it.
        assert resent <= abandoned[0]["n"] == stranded
        print(f"partner saw {seen} before the kill; {resent} packages were sent twice")


async def test_sigterm_finishes_in_flight_attempts_and_exits_0(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits=LIMITS) as (gw, agency, _):
        agency.delay = 0.3
        await place_many(gw, 40)
        async with dispatcher(Path(gw.settings.base_dir)) as proc:
            await until(lambda: sum(agency.requests.values()) >= 8)
            out, err = await stopped(proc, 10)
        assert proc.returncode == 0, err.decode()
        assert "delivered=" in out.decode()
        states = await outbox.counts(gw)
        assert states.get("sending", 0) == 0, "a lease was left behind"
        # Everything the partner acted on is recorded as delivered; the rest waits.
        assert states.get("delivered") == len(agency.effects)
        assert states.get("queued") == 40 - len(agency.effects)
        assert not await rows(gw, "SELECT * FROM attempts WHERE outcome != 'delivered'")


async def test_two_dispatchers_share_the_outbox_without_sending_twice(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits=LIMITS) as (gw, agency, _):
        agency.delay = 0.002
        ids = await place_many(gw, 200)
        ws = Path(gw.settings.base_dir)
        procs = [await start_dispatcher(ws, "--once") for _ in range(2)]
        results = [await p.communicate() for p in procs]
        assert all(p.returncode == 0 for p in procs), results
        assert set(agency.effects) == set(ids)
        assert set(agency.requests.values()) == {1}, "a claimed package went out twice"
        delivered = [int(out.decode().split("delivered=")[1].split()[0]) for out, _ in results]
        assert sum(delivered) == 200


async def test_cli_lists_deliveries_and_attempts(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits=LIMITS) as (gw, agency, _):
        agency.script.append("500")
        [pid] = await place_many(gw, 1)
        ws = Path(gw.settings.base_dir)
        await (await start_dispatcher(ws, "--once")).communicate()

        async def gateway(*args: str) -> Any:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "-c", str(ws), *args, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            return json.loads(out)

        [row] = await gateway("deliveries", "--state", "retry_wait", "--json")
        assert row["id"] == pid and row["attempts"] == 1 and "HTTP 500" in row["last_error"]
        [attempt] = await gateway("package", "attempts", pid, "--json")
        assert attempt["status"] == "500" and attempt["retry_at"] == row["next_attempt_at"]


async def test_sigterm_ends_the_dispatcher_when_failures_in_flight_open_the_breaker(tmp_path: Path) -> None:
    """Every attempt in flight at SIGTERM fails, and together they open the breaker (the
    default policy, whichever it is): the lane gives back what it claimed ahead, and
    the process still ends within the attempt timeout plus a few seconds."""
    async with agency_workspace(tmp_path, limits="concurrency = 20\nrate_per_second = 1000\ntimeout = 3") as (
        gw, agency, _,
    ):  # fmt: skip
        agency.default, agency.delay = "500", 1.0
        await place_many(gw, 60)
        async with dispatcher(Path(gw.settings.base_dir)) as proc:
            await until(lambda: sum(agency.requests.values()) >= 20)
            out, err = await stopped(proc, 3 + 5)
        assert proc.returncode == 0, err.decode()
        states = await outbox.counts(gw)
        assert states.get("sending", 0) == 0, "a lease was left behind"
        assert states.get("retry_wait") == 20 and states.get("queued") == 40


async def test_sigterm_does_not_wait_for_the_rate_limiters_tokens(tmp_path: Path) -> None:
    """A slow rate (one send every 4 s) must not hold a stopping dispatcher: packages
    whose worker still waits for a token were not sent, so they go back as they were."""
    async with agency_workspace(tmp_path, limits="concurrency = 4\nrate_per_second = 0.25\ntimeout = 2") as (
        gw, agency, _,
    ):  # fmt: skip
        await place_many(gw, 10)
        async with dispatcher(Path(gw.settings.base_dir)) as proc:
            await until(lambda: len(agency.effects) >= 1)
            await asyncio.sleep(0.5)  # the other workers now wait for tokens
            out, err = await stopped(proc, 2 + 3)
        assert proc.returncode == 0, err.decode()
        states = await outbox.counts(gw)
        assert states.get("delivered") == len(agency.effects) == 1
        assert states.get("queued") == 9
        assert not await rows(gw, "SELECT * FROM attempts WHERE outcome != 'delivered'")
