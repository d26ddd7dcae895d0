"""SQLite specifics: the checkpointer thread, large inserts in a thread of their own, and
waiting for another process's lock.

Run on every backend option: these tests open a SQLite file of their own.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest

from gateway.storage.sqlite import BACKSTOP_PAGES, BULK_ROWS, SQLiteDatabase, _multi_row
from gateway.storage.wal import Checkpointer

ROW = "INSERT INTO api_tokens (id, role, secret_hash, label, created_at) VALUES (?, 'auditor', 'x', ?, 'now')"


def checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sqlite-checkpointer"]


ENTRY = (
    "INSERT INTO audit_entries (idx, leaf, leaf_hash, kind, partner_id, case_token, at)"
    " VALUES (?, ?, ?, 'disclosure', 'p', NULL, 'now')"
)


class Ticks:
    """Counts the turns of the event loop, each `interval` apart, while it runs."""

    def __init__(self, interval: float) -> None:
        self.count = 0
        self._task = asyncio.create_task(self._tick(interval))

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.count += 1

    def stop(self) -> None:
        self._task.cancel()


def entries(count: int) -> list[tuple[int, str, bytes]]:
    return [(n, "x" * 2000, n.to_bytes(32, "big")) for n in range(count)]


async def test_a_large_insert_leaves_the_loop_free(tmp_path: Path) -> None:
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    try:
        ticks = Ticks(0)
        await asyncio.sleep(0)
        async with db.transaction() as tx:
            before = ticks.count
            await tx.insert_many(ENTRY, entries(BULK_ROWS * 8))
            during = ticks.count - before
        ticks.stop()
        # Inline, the loop would not turn once until the last row was in; in the
        # thread, it turns while each block of rows is inserted.
        assert during >= 8
        assert [t for t in threading.enumerate() if t.name.startswith("sqlite-bulk")]
    finally:
        await db.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("sqlite-bulk")]


async def test_a_large_insert_cancelled_midway_leaves_nothing(tmp_path: Path) -> None:
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    try:
        async def insert() -> None:
            async with db.transaction() as tx:
                await tx.insert_many(ENTRY, entries(BULK_ROWS * 40))

        task = asyncio.create_task(insert())
        await asyncio.sleep(0.05)  # a block is in the thread by now
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM audit_entries") == 0
            await tx.insert_many(ENTRY, entries(BULK_ROWS))  # the connection is not left in use
        async with db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM audit_entries") == BULK_ROWS
    finally:
        await db.close()


async def test_a_large_insert_keeps_to_the_parameters_sqlite_binds(tmp_path: Path) -> None:
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    try:
        # Fewer than a block of these rows needs (3 each); SQLite before 3.32 binds 999.
        db._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 500)
        async with db.transaction() as tx:
            await tx.insert_many(ENTRY, entries(BULK_ROWS * 2 + 7))
        async with db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM audit_entries") == BULK_ROWS * 2 + 7
    finally:
        await db.close()


def _in_the_file(db_file: Path) -> int | None:
    """Rows of api_tokens in the database file itself, not counting the WAL (None if the
    file could not be read while a checkpoint wrote it)."""
    try:
        with closing(sqlite3.connect(f"{db_file.as_uri()}?immutable=1", uri=True)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM api_tokens").fetchone()[0])
    except sqlite3.DatabaseError:
        return None


@pytest.fixture
def fdatasyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str]]:
    """Each `os.fdatasync` from here on: when, and of which file (SQLite's own syncs in C,
    a checkpoint's, are not seen)."""
    synced: list[tuple[float, str]] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        synced.append((time.monotonic(), os.path.realpath(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    return synced


async def _until(done: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@asynccontextmanager
async def _reader_held(tmp_path: Path) -> AsyncIterator[tuple[Path, str, SQLiteDatabase, sqlite3.Connection]]:
    """A database with everything so far copied back, and another connection holding a
    read snapshot from then, so that no checkpoint can copy what is committed next: the
    file, its WAL's path, the database and the reader."""
    file = tmp_path / "g.db"
    db = await SQLiteDatabase.open(str(file))
    reader = sqlite3.connect(file, isolation_level=None)
    try:
        await db.compact()  # the migrations' commits copied back
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM api_tokens").fetchall()
        yield file, os.path.realpath(f"{file}-wal"), db, reader
    finally:
        reader.close()
        await db.close()


async def test_a_commit_no_checkpoint_can_copy_is_synced_all_the_same(
    tmp_path: Path, fdatasyncs: list[tuple[float, str]]
) -> None:
    # A commit is made durable by the thread's checkpoint, which syncs the WAL before
    # it copies: unless a reader of another connection still needs the pages (a long
    # report, `gateway audit verify`), when it copies, and syncs, nothing. Then the
    # thread syncs the WAL itself: a power cut still loses tens of milliseconds at most.
    async with _reader_held(tmp_path) as (file, wal, db, reader):
        copies = db.checkpointer.runs
        before = time.monotonic()
        async with db.transaction() as tx:
            await tx.execute(ROW, ("r1", "a label"))

        def after() -> list[float]:
            return [at for at, path in fdatasyncs if path == wal and at > before]

        await _until(lambda: bool(after()), "no sync of the WAL")
        assert min(after()) - before < 2  # soon, not once the reader is done
        assert db.checkpointer.runs > copies  # a checkpoint ran first
        assert _in_the_file(file) == 0  # and could not copy the commit
        reader.execute("COMMIT")
        # Once the reader is gone, the next commit's checkpoint copies both back.
        async with db.transaction() as tx:
            await tx.execute(ROW, ("r2", "a label"))
        await _until(lambda: _in_the_file(file) == 2, "never copied back")


async def test_what_was_committed_last_is_on_the_disk_when_the_checkpointer_stops(
    tmp_path: Path, fdatasyncs: list[tuple[float, str]]
) -> None:
    # Another process keeps the database open (here a reader with a snapshot), so
    # closing is not the last connection's checkpoint: the thread's last round syncs.
    # A checkpointer of its own that rests a minute after each round, beside a writer.
    file = tmp_path / "g.db"
    wal = os.path.realpath(f"{file}-wal")
    writer = sqlite3.connect(file, isolation_level=None)
    reader = sqlite3.connect(file, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    checkpointer = Checkpointer(file, interval=60)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM t").fetchall()  # no checkpoint copies what follows
        writer.execute("INSERT INTO t VALUES (0)")
        checkpointer.committed()
        await _until(lambda: any(path == wal for _, path in fdatasyncs), "no sync of the WAL")
        fdatasyncs.clear()  # the thread rests now
        writer.execute("INSERT INTO t VALUES (1)")
        checkpointer.committed()
        await asyncio.to_thread(checkpointer.close)
        assert [path for _, path in fdatasyncs] == [wal]
    finally:
        checkpointer.close()
        reader.close()
        writer.close()


async def test_a_sync_that_fails_is_logged_and_the_thread_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fdatasync", failing)
    async with _reader_held(tmp_path) as (_, _, db, _):
        async with db.transaction() as tx:
            await tx.execute(ROW, ("r1", "a label"))

        def logged() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "g.db-wal" in r.getMessage()]

        await _until(lambda: bool(logged()), "the failure was not logged")
        record = logged()[0]
        assert record.levelname == "WARNING" and os.strerror(errno.EIO) in record.getMessage()
        synced: list[int] = []
        monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
        async with db.transaction() as tx:
            await tx.execute(ROW, ("r2", "a label"))
        await _until(lambda: bool(synced), "the thread stopped after the failure")


def test_only_a_one_row_insert_is_made_many_rows() -> None:
    assert _multi_row("INSERT INTO t (a, b) VALUES (?, ?)", 3) == (
        "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)"
    )
    with pytest.raises(ValueError, match="not a one-row INSERT"):
        _multi_row("INSERT INTO t (a) SELECT a FROM u", 3)


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
    assert await tokens_after_reopen(tmp_path / "g.db") == 50


async def tokens_after_reopen(file: Path) -> int:
    again = await SQLiteDatabase.open(str(file))
    try:
        async with again.transaction() as tx:
            return int(await tx.fetchval("SELECT COUNT(*) FROM api_tokens"))
    finally:
        await again.close()


async def test_close_waits_for_the_transaction_under_way(tmp_path: Path) -> None:
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    inside, go_on = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as tx:
            await tx.execute(ROW, ("t1", "label"))
            inside.set()
            await go_on.wait()
            await tx.execute(ROW, ("t2", "label"))

    task = asyncio.create_task(writer())
    await inside.wait()
    closing = asyncio.create_task(db.close())
    await asyncio.sleep(0.2)
    assert not closing.done()  # the writer is not cut off midway
    go_on.set()
    await task
    await closing
    assert await tokens_after_reopen(tmp_path / "g.db") == 2


async def test_a_transaction_waits_for_another_writer_without_stalling_the_loop(tmp_path: Path) -> None:
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    other = sqlite3.connect(tmp_path / "g.db", isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
        ticks = Ticks(0.01)

        async def release_later() -> None:
            await asyncio.sleep(0.5)
            other.execute("COMMIT")

        release = asyncio.create_task(release_later())
        started = time.perf_counter()
        async with db.transaction() as tx:
            await tx.execute(ROW, ("waited", "label"))
        waited = time.perf_counter() - started
        ticks.stop()
        await release
        assert waited >= 0.4  # it waited for the lock instead of failing at once
        assert ticks.count >= 10  # and the loop went on meanwhile
        async with db.transaction() as tx:
            assert await tx.fetchval("SELECT COUNT(*) FROM api_tokens") == 1
            # The wait's timeout does not stay on the connection.
            assert await tx.fetchval("PRAGMA busy_timeout") == 0
    finally:
        other.close()
        await db.close()


async def test_lanes_that_sync_the_wal_together_share_one_fdatasync(tmp_path: Path) -> None:
    """Twenty callers at once (lanes finishing their claims together) share one sync; a
    caller who asks while a sync runs gets one that began after it asked (the running
    one may have begun before its commit), shared with whoever asks meanwhile."""
    db = await SQLiteDatabase.open(str(tmp_path / "g.db"))
    try:
        async with db.transaction() as tx:
            await tx.execute(ROW, ("t0", "first"))
        await asyncio.gather(*(db.sync() for _ in range(20)))
        assert db.wal_syncs.runs == 1
        early = asyncio.ensure_future(db.sync())
        for _ in range(3):
            await asyncio.sleep(0)  # the sync under way, in its thread
        async with db.transaction() as tx:
            await tx.execute(ROW, ("t1", "second"))
        await asyncio.gather(early, *(db.sync() for _ in range(5)))
        assert db.wal_syncs.runs == 3
    finally:
        await db.close()
