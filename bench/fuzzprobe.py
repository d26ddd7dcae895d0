"""How the fuzz bench sends and watches: HTTP requests as given (path not normalised,
headers repeated as listed), raw bytes over a socket, connections that send one byte
and stop, the row count of every table, the reports stored, and the server's RSS."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from bench.fuzzraw import Request
from gateway.core import open_database
from gateway.storage import Database

ANSWER_SECONDS = 30.0
#: How long a raw request waits for a status line. Some of them are incomplete on
#: purpose (a chunked body without its last chunk, less body than announced): the
#: server rightly waits for the rest, so after this the client hangs up ("held").
RAW_ANSWER_SECONDS = 1.5
#: The server's header timeout (`gateway.http.appkeys.Timeouts.header`) and the slack
#: allowed on a loaded machine before a slow connection counts as not cut.
HEADER_TIMEOUT, SLACK = 10.0, 5.0
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


class Probe:
    def __init__(self, database_url: str, port: int, concurrency: int) -> None:
        self.database_url, self.port, self.concurrency = database_url, port, concurrency
        self.base = f"http://127.0.0.1:{port}"
        self.taken: set[tuple[str, str]] = set()
        self.refused: set[tuple[str, str]] = set()

    async def __aenter__(self) -> Probe:
        self.db: Database = await open_database(self.database_url)
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=False)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=ANSWER_SECONDS), auto_decompress=False,
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.session.close()
        await self.db.close()

    def note_report(self, message: tuple[str, str], status: int) -> None:
        """An authentic report's answer: taken in (2xx), or refused (4xx but 409,
        which says it was taken in before)."""
        if 200 <= status < 300 or status == 409:
            self.taken.add(message)
        elif 400 <= status < 500:
            self.refused.add(message)

    async def row_counts(self) -> dict[str, int]:
        async with self.db.transaction() as tx:
            if self.db.dialect == "sqlite":
                rows = await tx.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
                names = [r["name"] for r in rows]
            else:
                rows = await tx.fetchall(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                )
                names = [r["table_name"] for r in rows]
            return {name: int(await tx.fetchval(f"SELECT COUNT(*) FROM {name}")) for name in names}

    async def leaked_reports(self) -> int:
        """Authentic reports that were refused, yet are in the callbacks table."""
        async with self.db.transaction() as tx:
            stored = {(r["partner_id"], r["webhook_id"])
                      for r in await tx.fetchall("SELECT partner_id, webhook_id FROM callbacks")}  # fmt: skip
        return len((self.refused - self.taken) & stored)


async def send_http(session: aiohttp.ClientSession, base: str, request: Request) -> int | str:
    url = URL(base + request.path, encoded=True)
    try:
        async with session.request(
            request.method, url, headers=CIMultiDict(request.headers), data=request.body or None,
            allow_redirects=False, skip_auto_headers=["Content-Type"],
        ) as answer:  # fmt: skip
            await answer.read()
            return answer.status
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientError:
        return "closed"
    except ValueError:  # a header or URL the client library will not send
        return "unsendable"


async def send_raw(port: int, request: Request) -> int | str:
    assert request.raw is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if request.trickle:
            pieces = [request.raw[i : i + 8] for i in range(0, len(request.raw), 8)]
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(request.trickle / len(pieces))
        else:
            writer.write(request.raw)
            await writer.drain()
        if request.hangup:
            return "hung up"
        head = b""
        async with asyncio.timeout(RAW_ANSWER_SECONDS):
            while b"\r\n" not in head and (chunk := await reader.read(4096)):
                head += chunk
        found = STATUS_LINE.match(head)
        return int(found[1]) if found else "closed"
    except TimeoutError:
        return "held"
    except (ConnectionError, OSError):
        return "closed"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def slow_connections(port: int, count: int) -> int:
    """Open ``count`` connections that send one byte and nothing more; how many the
    server had not closed within its header timeout plus the slack."""

    async def one() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"G")
        await writer.drain()
        try:
            async with asyncio.timeout(HEADER_TIMEOUT + SLACK):
                await reader.read()
            return True
        except TimeoutError:
            return False
        finally:
            writer.close()

    return sum(not cut for cut in await asyncio.gather(*(one() for _ in range(count))))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """The RSS of process ``pid`` at the start, its peak (sampled every 0.2 s) and at the end."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = self.peak = self.end = 0

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kb(self.pid))
            await asyncio.sleep(0.2)

    async def __aenter__(self) -> RssSampler:
        self.start = self.peak = rss_kb(self.pid)
        self.task: asyncio.Task[Any] = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        self.end = rss_kb(self.pid)
        self.peak = max(self.peak, self.end)
