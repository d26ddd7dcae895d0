"""The circuit breaker: it opens on a failure rate over a sliding window, not on a few
failures in a row; a probe holds the gate no longer than one attempt can last; and an
attempt holds its concurrency slot no longer than the attempt timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.cli.placement import read_case
from gateway.clock import isotime
from gateway.config import BreakerPolicy, load_settings
from gateway.core import Gateway
from gateway.delivery import breaker, outbox
from gateway.delivery.dispatch import Dispatcher, Options
from gateway.onboarding import registry
from gateway.placement import service as placement
from tests.partners import CASE, PARTNER, REPO, Clock, agency_workspace, init_workspace, place_many, rows

FAILS = {0, 1, 2, 3, 4, 10, 15, 20, 25, 30, 35, 38}
"""30% of 40 attempts fail, five of them in a row at the start."""


async def test_a_partner_failing_now_and_then_keeps_its_traffic(tmp_path: Path) -> None:
    clock = Clock()
    limits = "concurrency = 1\nbackoff_base = 1.0\nbackoff_cap = 1.0"
    async with agency_workspace(tmp_path, limits=limits, clock=clock) as (gw, agency, _):
        await place_many(gw, 40)
        agency.script.extend("500" if n in FAILS else "ok" for n in range(40))
        await Dispatcher(gw).run_once()  # the default policy
        assert sum(agency.requests.values()) == 40, "the partner was paused"
        [state] = await rows(gw, "SELECT breaker FROM partner_state")
        assert state["breaker"] == "closed"
        assert (await outbox.counts(gw)).get("delivered") == 28


async def test_a_partner_failing_half_the_time_is_paused_after_the_minimum_volume(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits="concurrency = 1") as (gw, agency, _):
        await place_many(gw, 30)
        agency.default = "500"
        await Dispatcher(gw).run_once()
        assert sum(agency.requests.values()) == BreakerPolicy().min_attempts == 20
        [state] = await rows(gw, "SELECT breaker, failures FROM partner_state")
        assert (state["breaker"], state["failures"]) == ("open", 20)


def result(signal: breaker.Signal, started: datetime, retry_after: float | None = None) -> breaker.Result:
    return breaker.Result(signal, retry_after, isotime(started))


async def record(gw: Gateway, results: list[breaker.Result], now: datetime, policy: BreakerPolicy) -> str:
    async with gw.db.transaction() as tx:
        await breaker.record(tx, PARTNER, results, now, policy)
        return str(await tx.fetchval("SELECT breaker FROM partner_state WHERE partner_id = ?", (PARTNER,)))


async def test_the_window_slides_and_old_results_are_left_out(tmp_path: Path) -> None:
    policy = BreakerPolicy(failure_rate=0.5, min_attempts=20, window_seconds=60, cooldown_seconds=30)
    t0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    async with agency_workspace(tmp_path) as (gw, _, _):
        assert await record(gw, [result("failure", t0)] * 19, t0, policy) == "closed"  # too few
        later = t0 + timedelta(seconds=65)  # the 19 left the window
        mixed = [result("success", later)] * 11 + [result("failure", later)] * 9
        assert await record(gw, mixed, later, policy) == "closed"  # 9 of 20: under half
        assert await record(gw, [result("failure", later)] * 2, later, policy) == "open"  # 11 of 22
        [state] = await rows(gw, "SELECT opened_until FROM partner_state")
        assert state["opened_until"] == isotime(later + timedelta(seconds=30))
        # Attempts that started before the breaker opened say nothing new: a success of
        # one of them does not close it, nor does a late failure extend the cool-down.
        stale = [result("success", later - timedelta(seconds=1)), result("failure", later)]
        assert await record(gw, stale, later + timedelta(seconds=5), policy) == "open"
        [again] = await rows(gw, "SELECT opened_until FROM partner_state")
        assert again == state


async def test_retry_after_holds_its_package_and_lengthens_the_cool_down(tmp_path: Path) -> None:
    """One 429 does not pause a partner whose other answers are fine; when the breaker
    opens, it stays open at least as long as the partner asked."""
    policy = BreakerPolicy(failure_rate=0.5, min_attempts=4, window_seconds=60, cooldown_seconds=30)
    t0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    async with agency_workspace(tmp_path) as (gw, _, _):
        assert await record(gw, [result("failure", t0, retry_after=600)], t0, policy) == "closed"
        async with gw.db.transaction() as tx:
            gate = await breaker.gate(tx, PARTNER, t0, probe_seconds=5, wanted=10)
        assert gate.allowed == 10
        failures = [result("failure", t0)] * 3
        assert await record(gw, failures, t0 + timedelta(seconds=1), policy) == "open"
        [state] = await rows(gw, "SELECT opened_until FROM partner_state")
        assert state["opened_until"] == isotime(t0 + timedelta(seconds=600))


async def test_a_probe_killed_with_its_dispatcher_frees_the_gate_within_the_attempt_timeout(
    tmp_path: Path,
) -> None:
    """The breaker is open and its cool-down over; a dispatcher takes the probe, the
    partner hangs, the dispatcher is SIGKILLed. Its successor, with the production lease
    of 120 s, sends again once the attempt timeout (2 s) and a small margin are over."""
    clock = Clock()
    clock.now = datetime.now(UTC) - timedelta(hours=1)  # the breaker opened an hour ago
    async with agency_workspace(tmp_path, limits="concurrency = 1\ntimeout = 2", clock=clock) as (
        gw, agency, _,
    ):  # fmt: skip
        await place_many(gw, 25)
        agency.default = "500"
        await Dispatcher(gw).run_once()
        [state] = await rows(gw, "SELECT breaker FROM partner_state")
        assert state["breaker"] == "open"
        agency.default, agency.delay = "ok", 30.0  # the probe hangs
        sent = sum(agency.requests.values())
        ws = Path(gw.settings.base_dir)
        first = await dispatcher(ws)
        try:
            await until(lambda: sum(agency.requests.values()) == sent + 1)
        finally:
            first.kill()
            await first.wait()
        agency.delay = 0.0
        killed_at = datetime.now(UTC)
        [state] = await rows(gw, "SELECT breaker, probe_until FROM partner_state")
        assert state["breaker"] == "half_open"
        assert state["probe_until"] <= isotime(killed_at + timedelta(seconds=2 + breaker.PROBE_MARGIN))
        second = await dispatcher(ws)
        try:
            await until(lambda: len(agency.effects) >= 1, timeout=2 + breaker.PROBE_MARGIN + 10)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.communicate(), 30)


async def dispatcher(ws: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "GATEWAY_DISPATCH__LEASE_SECONDS": "120"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), "dispatch", "--quiet",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_an_attempt_holds_its_slot_no_longer_than_the_timeout(tmp_path: Path) -> None:
    """An SMTP relay that answers every command just inside the per-command timeout of
    the SMTP client: the attempt as a whole still ends at the attempt timeout."""

    conversations: list[asyncio.Task[None]] = []

    async def slow_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conversations.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await converse(reader, writer)
        finally:
            writer.close()

    async def converse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(line: str) -> None:
            await asyncio.sleep(0.7)
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        await say("220 slow relay")
        while line := await reader.readline():
            command = line.decode().strip().upper()
            if command == "DATA":
                await say("354 go on")
                while (await reader.readline()).rstrip(b"\r\n") != b".":
                    pass
                await say("250 queued")
            elif command == "QUIT":
                await say("221 bye")
                break
            else:
                await say("250 ok")

    relay = await asyncio.start_server(slow_relay, "127.0.0.1", 0)
    port = relay.sockets[0].getsockname()[1]
    try:
        async with mail_workspace(tmp_path, port) as gw:
            await place_mail(gw)
            await Dispatcher(gw, Options()).run_once()
            [attempt] = await rows(gw, "SELECT outcome, error_class, latency_ms FROM attempts")
    finally:
        relay.close()
        for conversation in conversations:
            conversation.cancel()
        await asyncio.gather(*conversations, return_exceptions=True)
        await relay.wait_closed()
    assert (attempt["outcome"], attempt["error_class"]) == ("retry", "PartnerTimeout")
    assert attempt["latency_ms"] < 1000 + 300


@asynccontextmanager
async def mail_workspace(tmp_path: Path, port: int) -> AsyncIterator[Gateway]:
    """The sample email partner, pointed at a relay on 127.0.0.1 without TLS, timeout 1 s."""
    ws = init_workspace(tmp_path / "ws")
    profile = ws / "notify-mail.toml"
    profile.write_text(
        (REPO / "examples" / "partners" / "notify-mail.toml").read_text()
        .replace("smtp://127.0.0.1:18025", f"smtp://127.0.0.1:{port}")
        .replace('tls = "starttls"', 'tls = "none"\ninsecure_no_tls = true')
        .replace("[adapter_config]", "[limits]\ntimeout = 1\n\n[adapter_config]")
    )
    async with await Gateway.open(load_settings(ws), clock=Clock()) as gw:
        await registry.add(gw, profile, actor="test")
        yield gw


async def place_mail(gw: Gateway) -> None:
    await placement.place(gw, read_case(CASE), "notify-mail", "reminder", actor="test")


async def test_gateway_dispatch_takes_the_breaker_policy_from_gateway_toml(tmp_path: Path) -> None:
    async with agency_workspace(tmp_path, limits="concurrency = 1") as (gw, agency, _):
        config = Path(gw.settings.base_dir) / "gateway.toml"
        config.write_text(config.read_text().replace("min_attempts = 20", "min_attempts = 3"))
        await place_many(gw, 10)
        agency.default = "500"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "-c", str(config), "dispatch", "--once", "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert sum(agency.requests.values()) == 3
        [state] = await rows(gw, "SELECT breaker FROM partner_state")
        assert state["breaker"] == "open"
        config.write_text(config.read_text().replace("failure_rate = 0.5", "failure_rate = 1.5"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "-c", str(config), "dispatch", "--once",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 1
        assert "breaker.failure_rate: Input should be less than or equal to 1" in err.decode()
