"""The audit checkpoint timer of ``gateway serve`` (``audit_checkpoint_seconds``), run by
the real app with its workers on 127.0.0.1: new entries get a signed checkpoint within
a few seconds, an idle log gets no new checkpoint rows, and 0 turns the timer off."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from gateway.audit import log as audit_log
from gateway.audit import timer
from gateway.audit.checkpoint import parse_and_verify
from gateway.audit.signer import LogSigner
from gateway.config import CONFIG_NAME, Settings, load_settings
from gateway.core import Gateway
from gateway.http import create_app
from gateway.onboarding import tokens
from gateway.storage import Database
from tests.helpers import invoke, reap
from tests.test_serve import free_port

T = TypeVar("T")
ClientFactory = Callable[..., Awaitable[TestClient]]


async def serve_process(ws: Path, port: int, *args: str) -> asyncio.subprocess.Process:
    """`gateway serve` in a process of its own, once it listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), "serve", "--port", str(port), *args,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
    assert line.startswith(f"serving on http://127.0.0.1:{port} "), line
    return proc


def set_interval(workspace: Path, seconds: int) -> None:
    """Set the timer in the workspace's gateway.toml, as an operator would."""
    path = workspace / CONFIG_NAME
    text = path.read_text(encoding="utf-8")
    now = re.search(r"\naudit_checkpoint_seconds = (\d+)\n", text)
    assert now is not None
    path.write_text(text.replace(now[0], f"\naudit_checkpoint_seconds = {seconds}\n"))


@asynccontextmanager
async def opened(workspace: Path, seconds: int) -> AsyncIterator[Gateway]:
    set_interval(workspace, seconds)
    async with await Gateway.open(load_settings(workspace)) as gw:
        assert gw.settings.audit_checkpoint_seconds == seconds
        yield gw


async def serve(gw: Gateway, aiohttp_client: ClientFactory) -> TestClient:
    """The app as `gateway serve` runs it: real HTTP on 127.0.0.1, workers on."""
    return await aiohttp_client(create_app(gw.settings, gateway=gw, workers=True))


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert loop.time() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.05)


async def state(gw: Gateway) -> tuple[int, int, audit_log.CheckpointRecord | None]:
    """(log size, checkpoint rows, latest checkpoint)."""
    async with gw.db.transaction() as tx:
        size = (await audit_log.load_tree(tx)).size
        rows = await tx.fetchval("SELECT COUNT(*) FROM audit_checkpoints")
        latest = await audit_log.latest_checkpoint(tx)
    return size, rows, latest


class Ticks:
    """Counts the timer's calls of the real `checkpoint_now`, so that a test can wait
    for ticks rather than sleep; `fail` makes the next calls raise first."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.fail = 0
        real = audit_log.checkpoint_now

        async def counted(db: Database, signer: LogSigner) -> audit_log.CheckpointRecord:
            self.calls += 1
            if self.fail:
                self.fail -= 1
                raise OSError("disk on fire")
            return await real(db, signer)

        monkeypatch.setattr(audit_log, "checkpoint_now", counted)

    async def wait(self, n: int, timeout: float = 10.0) -> None:
        target = self.calls + n

        async def reached() -> bool:
            return self.calls >= target

        await eventually(reached, timeout)


async def test_new_entries_get_a_signed_checkpoint_within_the_interval(
    onboarded: Path, aiohttp_client: ClientFactory
) -> None:
    async with opened(onboarded, 1) as gw:
        client = await serve(gw, aiohttp_client)
        auditor = {"Authorization": "Bearer " + await tokens.create(gw, "auditor", "a", actor="t")}
        for n in range(3):
            await tokens.create(gw, "operator", f"o{n}", actor="t")
        size, _, latest = await state(gw)
        assert latest is None or latest.size < size  # nothing covers the new entries yet

        async def covered() -> audit_log.CheckpointRecord | None:
            _, _, latest = await state(gw)
            return latest if latest is not None and latest.size == size else None

        record = await eventually(covered)
        vkey = gw.audit_signer.vkey
        assert parse_and_verify(record.note, vkey).size == size
        # Auditors see it over HTTP too.
        response = await client.get("/v1/audit/checkpoint", headers={**auditor, "Accept": "application/json"})
        assert response.status == 200
        assert (await response.json())["size"] == size

        # Later entries get a later checkpoint, which extends this one.
        await tokens.create(gw, "operator", "later", actor="t")

        async def covered_later() -> audit_log.CheckpointRecord | None:
            _, _, latest = await state(gw)
            return latest if latest is not None and latest.size == size + 1 else None

        assert parse_and_verify((await eventually(covered_later)).note, vkey).size == size + 1


async def test_idle_log_gets_no_new_checkpoint_rows(
    onboarded: Path, aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = Ticks(monkeypatch)
    async with opened(onboarded, 1) as gw:
        await audit_log.checkpoint_now(gw.db, gw.audit_signer)  # the log as it stands is covered
        before = await state(gw)
        assert before[2] is not None and before[2].size == before[0]
        await serve(gw, aiohttp_client)
        await ticks.wait(3)
        assert await state(gw) == before


async def test_zero_turns_the_timer_off(
    onboarded: Path, aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = Ticks(monkeypatch)
    async with opened(onboarded, 0) as gw:
        # The task ends at once instead of waiting for a stop that never comes.
        ticking = timer.run(gw.db, gw.audit_signer, asyncio.Event(), gw.settings.audit_checkpoint_seconds)
        await asyncio.wait_for(ticking, timeout=1)
        await serve(gw, aiohttp_client)
        await tokens.create(gw, "operator", "o", actor="t")
        before = await state(gw)
        # With a 1 s timer this is long enough for a checkpoint (see the test above).
        await asyncio.sleep(1.5)
        assert ticks.calls == 0
        assert await state(gw) == before
        assert before[2] is None or before[2].size < before[0]


async def test_an_error_is_logged_and_the_timer_goes_on(
    onboarded: Path,
    aiohttp_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks = Ticks(monkeypatch)
    ticks.fail = 1
    async with opened(onboarded, 1) as gw:
        client = await serve(gw, aiohttp_client)
        await tokens.create(gw, "operator", "o", actor="t")
        size = (await state(gw))[0]
        with caplog.at_level(logging.WARNING, logger=timer.__name__):

            async def covered() -> bool:
                latest = (await state(gw))[2]
                return latest is not None and latest.size == size

            await eventually(covered)
        assert ticks.calls >= 2
        [warning] = [r for r in caplog.records if r.name == timer.__name__]
        assert warning.levelno == logging.WARNING
        assert "OSError" in warning.getMessage()
        assert "disk on fire" not in warning.getMessage()  # the type, never the message
        assert (await client.get("/healthz")).status == 200


async def test_shutdown_stops_the_timer_without_waiting_for_it(
    onboarded: Path, aiohttp_client: ClientFactory
) -> None:
    def timer_tasks() -> list[asyncio.Task[Any]]:
        return [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "cr_code", None) is timer.run.__code__ and not t.done()
        ]

    async with opened(onboarded, 300) as gw:
        client = await serve(gw, aiohttp_client)
        assert len(timer_tasks()) == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.close()
        assert loop.time() - started < 5
        assert timer_tasks() == []


def test_setting_defaults_and_bounds() -> None:
    assert Settings(bank_id="bank").audit_checkpoint_seconds == 60
    assert Settings(bank_id="bank", audit_checkpoint_seconds=0).audit_checkpoint_seconds == 0
    with pytest.raises(ValidationError):
        Settings(bank_id="bank", audit_checkpoint_seconds=-1)


async def covered_at(settings: Settings) -> bool:
    """Whether the latest checkpoint covers every entry, read by a gateway of its own."""
    async with await Gateway.open(settings) as gw:
        size, _, latest = await state(gw)
    return latest is not None and latest.size == size


async def test_serve_without_workers_keeps_the_tail_signed_and_signs_at_shutdown(onboarded: Path) -> None:
    """`gateway serve --no-workers` as a process: entries another process appends are
    signed within the interval; with a timer that never ticks, those left at SIGTERM
    get a last checkpoint as it stops."""
    settings = load_settings(onboarded)
    for seconds, stop in ((1, signal.SIGKILL), (3600, signal.SIGTERM)):
        set_interval(onboarded, seconds)
        proc = await serve_process(onboarded, free_port(), "--no-workers")
        try:
            # Another process's command appends (a thread here: the CLI runs its own loop).
            made = await asyncio.to_thread(invoke, "-c", onboarded, "tokens", "create", "--role", "operator")
            assert made.exit_code == 0
            if seconds == 1:
                await eventually(lambda: covered_at(settings))
            else:
                assert not await covered_at(settings)
            proc.send_signal(stop)
            await asyncio.wait_for(proc.wait(), 60)
            assert await covered_at(settings)
        finally:
            await reap(proc)


def test_dispatch_signs_what_is_left_as_it_stops(onboarded: Path) -> None:
    set_interval(onboarded, 3600)
    assert invoke("-c", onboarded, "tokens", "create", "--role", "operator").exit_code == 0
    result = invoke("-c", onboarded, "dispatch", "--once", "--quiet")
    assert result.exit_code == 0, result.output

    async def check() -> None:
        async with await Gateway.open(load_settings(onboarded)) as gw:
            size, _, latest = await state(gw)
            assert latest is not None and latest.size == size

    asyncio.run(check())
