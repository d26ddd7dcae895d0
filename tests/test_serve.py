"""`gateway serve` as an operator runs it: it answers, stops cleanly on SIGTERM, and a
port it cannot take is one clear line, not a traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import reap
from tests.partners import agency_workspace, place_many


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve(ws: Path, port: int, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), "serve", "--port", str(port), "--no-workers",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip


async def test_serve_answers_stops_on_sigterm_and_refuses_a_port_in_use(onboarded: Path) -> None:
    port = free_port()
    first = await serve(onboarded, port)
    try:
        assert first.stderr is not None
        line = (await asyncio.wait_for(first.stderr.readline(), 60)).decode()
        assert line.startswith(f"serving on http://127.0.0.1:{port} "), line
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as answer,
        ):
            assert answer.status == 200

        second = await serve(onboarded, port)
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 1 and out == b""
        assert err.decode().strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"

        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 60) == 0
    finally:
        await reap(first)


async def test_a_port_in_use_is_one_line_even_with_failing_deliveries_due(tmp_path: Path) -> None:
    """With the dispatcher on board and every due delivery failing slowly, a port that is
    taken still ends `serve` at once with the one line, and sends nothing."""
    async with agency_workspace(tmp_path, limits="concurrency = 20\ntimeout = 3") as (gw, agency, _):
        agency.default, agency.delay = "500", 1.0
        await place_many(gw, 60)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            ws = gw.settings.base_dir
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "-c", str(ws), "serve", "--port", str(port),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 3 + 5)
            finally:
                await reap(proc)
        assert proc.returncode == 1 and out == b""
        assert err.decode().strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
        assert not agency.requests


MALFORMED = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to the HTTP port
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long
]


async def test_a_slow_request_head_is_cut_off_and_a_refused_request_is_one_log_line(onboarded: Path) -> None:
    """One byte of a request and nothing more: the connection is closed after the header
    timeout (10 s), not kept. Malformed requests get a 400 and one line each in the log,
    no traceback."""
    port = free_port()
    proc = await serve(onboarded, port)
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line.startswith("serving on"), line
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"G")
        await slow_writer.drain()
        opened = asyncio.get_running_loop().time()
        for raw in MALFORMED:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            await writer.wait_closed()
            assert answer.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), answer[:100]
        assert await asyncio.wait_for(slow_reader.read(), 10 + 5) == b""  # closed by the server
        assert asyncio.get_running_loop().time() - opened < 10 + 3
        slow_writer.close()
        await slow_writer.wait_closed()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        log = (await proc.stderr.read()).decode().splitlines()
    finally:
        await reap(proc)
    log = [line for line in log if "gateway.audit.timer" not in line]  # the shutdown checkpoint
    assert len(log) == len(MALFORMED), log
    said = "WARNING gateway.http.server: Error handling request from 127.0.0.1 (HTTP 400, "
    assert all(line.startswith(said) for line in log), log


@pytest.mark.parametrize(("setting", "loop"), [(None, "uvloop"), ("asyncio", "asyncio")])
async def test_serve_runs_on_uvloop_where_installed_unless_the_setting_says_asyncio(
    onboarded: Path, setting: str | None, loop: str
) -> None:
    port = free_port()
    proc = await serve(onboarded, port, {"GATEWAY_EVENT_LOOP": setting} if setting else None)
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert f"(event loop: {loop};" in line, line
        url = f"http://127.0.0.1:{port}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as answer:
            assert answer.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await reap(proc)


async def test_an_event_loop_setting_that_cannot_be_met_is_one_line(onboarded: Path) -> None:
    """Asking for uvloop where it is not installed: the line says how to install it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import sys; sys.modules['uvloop'] = None; from gateway.cli.main import main; main()",
        "-c", str(onboarded), "dispatch", "--once",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GATEWAY_EVENT_LOOP": "uvloop"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and out == b""
    assert err.decode().strip() == (
        "Error: event_loop = 'uvloop' in gateway.toml, but uvloop is not installed: "
        "pip install 'agency-gateway[uvloop]', or set event_loop = 'auto'"
    )
