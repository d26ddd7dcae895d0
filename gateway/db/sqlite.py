"""SQLite backend (WAL), the embedded default.

One stdlib ``sqlite3`` connection, used by one transaction at a time (an
``asyncio.Lock``). Statements run inline, on the event-loop thread: in WAL mode, with
the write lock already held, a statement of this code base takes microseconds, while
handing each one to a worker thread and back (what aiosqlite does) costs ~50 µs of
scheduling, which dominated a placement (~28 statements) and an inbound callback (~17).

Only the steps that may *wait* leave the loop: ``BEGIN IMMEDIATE``, which can wait up
to ``busy_timeout`` for another process's write lock (it is first tried inline with no
wait, and goes to a thread only if the lock is taken), and ``COMMIT``, which may run a
WAL checkpoint (disk writes and an fsync). Inside the transaction the write lock is
already ours and WAL readers never block, so no statement waits on another process.

The trade-off: a statement that is slow by itself (a large scan, a big report query)
blocks the event loop for its whole duration, and every other task with it. Work like
that belongs on its own connection in a thread (as ``gateway audit verify`` does), not
in a transaction here.

A cancelled task never leaves the connection half-used: a cancellation that arrives
while ``BEGIN``/``COMMIT`` runs in its thread waits for that thread to finish (it cannot
be stopped), rolls back what it began, and then propagates.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from gateway.db import Database, Lock, Params, Row, Transaction
from gateway.db.migrations import migrate
from gateway.errors import ConfigError, StorageError

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10000
PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    f"busy_timeout={BUSY_TIMEOUT_MS}",
)


class SQLiteTransaction(Transaction):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _translated():
            return self._conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with _translated():
            self._conn.executemany(sql, rows)

    async def take_turns(self, lock: Lock, item: str | None = None) -> None:
        """Nothing to wait for: BEGIN IMMEDIATE already makes writers run one at a time."""

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        with _translated():
            rows = self._conn.execute(sql, params).fetchall()
        return [dict(row) for row in rows]


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise StorageError(f"database refused the change: {exc}") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"database error: {exc}") from exc


async def _in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread. If the caller is cancelled meanwhile, wait for the
    thread to finish anyway (it cannot be interrupted, and the connection must not be
    touched by anyone else until it does), then let the cancellation through."""
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        raise


def _open(file: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        for pragma in PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # One connection, so transactions of concurrent tasks must take turns.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SQLiteDatabase:
        file = Path(path)
        if not file.parent.is_dir():
            raise ConfigError(f"database directory {file.parent} does not exist (run `gateway init`)")
        try:
            # In a thread: switching to WAL may wait for another process's lock.
            conn = await asyncio.to_thread(_open, file)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open database {file}: {exc}") from None
        db = cls(conn)
        await migrate(db)
        return db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self._begin()
            try:
                yield SQLiteTransaction(self._conn)
            except BaseException:
                self._rollback()
                raise
            await self._commit()

    async def _begin(self) -> None:
        # IMMEDIATE takes the write lock up front, so two processes never deadlock
        # upgrading read locks. It may wait (busy_timeout) for another process: a thread.
        # First a try that cannot wait (busy_timeout 0), inline: uncontended, it saves
        # the thread hop, which costs ~100 µs of loop time (measured in bench/inbound.py).
        try:
            with _translated():
                self._conn.execute("PRAGMA busy_timeout=0")
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise
                finally:
                    self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                await _in_thread(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        except BaseException:
            # Cancelled while the thread went on and began: undo it.
            self._rollback()
            raise

    async def _commit(self) -> None:
        # Usually 60-80 µs, but the COMMIT that crosses wal_autocheckpoint copies the
        # WAL into the database and fsyncs: measured 1-34 ms on ~1% of commits in the
        # benchmarks, up to 3/4 of all COMMIT time. That must not stall the loop.
        try:
            with _translated():
                await _in_thread(lambda: self._conn.execute("COMMIT"))
        except BaseException:
            # A failed COMMIT can leave the transaction open; a cancelled one has
            # finished in its thread (committed or not) before we get here.
            self._rollback()
            raise

    def _rollback(self) -> None:
        # SQLite may have rolled back by itself (e.g. on SQLITE_FULL); the original
        # error is the one to report.
        if self._conn.in_transaction:
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    async def close(self) -> None:
        self._conn.close()
