"""`gateway serve` as an operator runs it: it answers, stops cleanly on SIGTERM, and a
port it cannot take is one clear line, not a traceback."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.partners import agency_workspace, place_many


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve(ws: Path, port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "-c", str(ws), "serve", "--port", str(port), "--no-workers",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
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
        if first.returncode is None:
            first.kill()
            await first.wait()


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
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert proc.returncode == 1 and out == b""
        assert err.decode().strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
        assert not agency.requests
