"""SQLite specifics: the checkpointer thread, and waiting for another process's lock.

Run on every backend option: these tests open a SQLite file of their own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from gateway.db.sqlite import BACKSTOP_PAGES, SQLiteDatabase

ROW = "INSERT INTO api_tokens (id, role, secret_hash, label, created_at) VALUES (?, 'auditor', 'x', ?, 'now')"


def checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sqlite-checkpointer"]


async def test_the_wal_is_copied_back_and_started_over_between_bursts(tmp_path: Path) -> None:
    before = len(checkpointers())
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    try:
        label = "x" * 4000  # a page and more per row
        commits = 300
        wal = tmp_path / "g.db-wal"
        sizes = []
        for burst in range(5):
            for n in range(commits):
                async with db.transaction() as tx:
                    await tx.execute(ROW, (f"r{burst}-{n}", label))
            sizes.append(wal.stat().st_size)
            await asyncio.sleep(0.3)  # a lull: the thread catches up
        async with db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM api_tokens") == 5 * commits
        # A burst is far below the backstop, so only the thread checkpointed; without
        # it the WAL would hold all five bursts. With it, each burst starts it over.
        assert sizes[0] < BACKSTOP_PAGES * 4096 // 4
        assert max(sizes) < 2 * sizes[0], sizes
        assert db.checkpointer.runs > 0
        assert len(checkpointers()) == before + 1
    finally:
        await db.close()
    assert len(checkpointers()) == before  # closed with the database


async def test_what_was_committed_is_there_after_close_and_reopen(tmp_path: Path) -> None:
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    for n in range(50):
        async with db.transaction() as tx:
            await tx.execute(ROW, (f"t{n}", "label"))
    await db.close()
    again = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    try:
        async with again.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM api_tokens") == 50
    finally:
        await again.close()


async def test_a_transaction_waits_for_another_writer_without_stalling_the_loop(tmp_path: Path) -> None:
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async def release_later() -> None:
            await asyncio.sleep(0.5)
            other.execute("COMMIT")

        tick = asyncio.create_task(ticker())
        release = asyncio.create_task(release_later())
        started = time.perf_counter()
        async with db.transaction() as tx:
            await tx.execute(ROW, ("waited", "label"))
        waited = time.perf_counter() - started
        tick.cancel()
        await release
        assert waited >= 0.4  # it waited for the lock instead of failing at once
        assert ticks >= 10  # and the loop went on meanwhile
        async with db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM api_tokens") == 1
            # The wait's timeout does not stay on the connection.
            assert await tx.fetchval("PRAGMA busy_timeout") == 0
    finally:
        other.close()
        await db.close()
