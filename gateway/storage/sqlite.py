"""SQLite backend (WAL), the embedded default.

One stdlib ``sqlite3`` connection, used by one transaction at a time (an
``asyncio.Lock``). Statements run inline, on the event-loop thread: in WAL mode, with
the write lock already held, a statement of this code base takes microseconds, while
handing each one to a worker thread and back (what aiosqlite does) costs ~50 µs of
scheduling, which dominated a placement (~28 statements) and an inbound callback (~17).

Only a step that may *wait* leaves the loop: ``BEGIN IMMEDIATE``, which can wait up
to ``busy_timeout`` for another process's write lock (it is first tried inline with no
wait, and goes to a thread only if the lock is taken). Inside the transaction the write
lock is already ours and WAL readers never block, so no statement waits on another
process. ``COMMIT`` runs inline too: in WAL mode with ``synchronous=NORMAL`` it appends
the transaction's pages to the WAL file and does not fsync. What made a COMMIT slow,
the WAL checkpoint that SQLite runs in the committing connection once the WAL passes
``wal_autocheckpoint`` pages (copying pages into the database file and two fsyncs,
1-34 ms), is moved to a `Checkpointer` thread with a connection of its own
(`gateway.storage.wal`), which copies the WAL back, syncing it, while the loop goes on
committing (SQLite lets one checkpoint run beside the writer). The automatic
checkpoint stays, at a much larger size, as a backstop should that thread fall far
behind.

So a commit is on the disk only once that thread synced the WAL, tens of milliseconds
later: a power cut (not a crash of the process) may lose the last commits. Nothing may
leave the gateway on the strength of such a commit: before a package goes to a partner
or a checkpoint to a witness, `SQLiteDatabase.sync` syncs the WAL (an `fdatasync` in a
thread, for a whole claim of packages, shared with whoever asks meanwhile: `WalSyncs`).

The trade-off: a statement that is slow by itself (a large scan, a big report query)
blocks the event loop for its whole duration, and every other task with it. Work like
that belongs on its own connection in a thread (as ``gateway audit verify`` does), not
in a transaction here. The one large write, a batch of audit entries, goes through
``insert_many``, whose blocks of rows run in a `BulkWriter` thread.

A cancelled task never leaves the connection half-used: a cancellation that arrives
while ``BEGIN`` runs in its thread waits for that thread to finish (it cannot be
stopped), rolls back what it began, and then propagates.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from gateway.errors import ConfigError, StorageError
from gateway.storage.base import Database, Lock, Params, Row, Transaction
from gateway.storage.migrations import DataStepFunction, migrate
from gateway.storage.wal import Checkpointer, WalSyncs, wal_of

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10000
#: The committing connection checkpoints by itself only past this many WAL pages
#: (64 MiB of 4 KiB pages; SQLite's default is 1000): a backstop, see `Checkpointer`.
BACKSTOP_PAGES = 16384
PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    f"busy_timeout={BUSY_TIMEOUT_MS}",
    # Deleted and overwritten content is zeroed in the file, not left in free space
    # (a purge of personal data must not survive in the database file).
    "secure_delete=ON",
)


class SQLiteTransaction(Transaction):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, bulk: BulkWriter) -> None:
        self._conn = conn
        self._bulk = bulk

    async def execute(self, sql: str, params: Params = ()) -> int:
        # try/except inline rather than `_translated`: a statement's hot path (a
        # context manager costs more than the statement's binding).
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise _storage_error(exc) from exc

    async def insert_id(self, sql: str, params: Params = ()) -> int:
        # The connection's last rowid, which is the id (an INTEGER PRIMARY KEY is the
        # rowid): about 12 µs less than a RETURNING clause and its row fetched.
        try:
            rowid = self._conn.execute(sql, params).lastrowid
        except sqlite3.Error as exc:
            raise _storage_error(exc) from exc
        assert rowid is not None  # a row was inserted, or the statement raised
        return rowid

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with _translated():
            self._conn.executemany(sql, rows)

    async def insert_many(self, sql: str, rows: Sequence[Params]) -> None:
        """Blocks of BULK_ROWS rows (fewer where SQLite binds fewer parameters) go to
        the `BulkWriter` thread as one statement each (SQLite runs it without the GIL,
        while the loop prepares the next rows); fewer rows than that run inline, where
        a thread's round trip would cost more."""
        if not rows:
            return
        # SQLite before 3.32 binds at most 999 parameters a statement.
        limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        block = min(BULK_ROWS, limit // len(rows[0]))
        full = len(rows) - len(rows) % block if block > 1 else 0
        for first in range(0, full, block):
            await self._bulk.insert(self._conn, sql, rows[first : first + block])
        if full < len(rows):
            await self.executemany(sql, rows[full:])

    async def take_turns(self, lock: Lock, item: str | None = None) -> None:
        """Nothing to wait for: BEGIN IMMEDIATE already makes writers run one at a time."""

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            cursor = self._conn.execute(sql, params)
            # Plain tuples zipped with the column names: half the cost of building a
            # sqlite3.Row per row and copying it into a dict.
            cursor.row_factory = None
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            raise _storage_error(exc) from exc
        if not rows:
            return []
        names = [column[0] for column in cursor.description]
        if len(set(names)) < len(names):  # a join's shared column: the first one counts
            return [_first_of_each(names, row) for row in rows]
        return [dict(zip(names, row, strict=True)) for row in rows]


def _first_of_each(names: list[str], row: tuple[object, ...]) -> Row:
    found: Row = {}
    for name, value in zip(names, row, strict=True):
        found.setdefault(name, value)
    return found


def _storage_error(exc: sqlite3.Error) -> StorageError:
    """The gateway's error for a database error."""
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageError(f"database refused the change: {exc}")
    return StorageError(f"database error: {exc}")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise _storage_error(exc) from exc


async def _in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread. If the caller is cancelled meanwhile, wait for the
    thread to finish anyway (it cannot be interrupted, and the connection must not be
    touched by anyone else until it does), then let the cancellation through."""
    return await _waited(asyncio.get_running_loop().run_in_executor(None, fn))


async def _waited(future: asyncio.Future[T]) -> T:
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        raise


#: Rows per statement of `BulkWriter.insert`: the audit log's chunks (`log._CHUNK`). Each
#: block costs a hand-over to the thread and back (two thread wake-ups and a few turns
#: of the loop, ~0.3 ms here): a batch of 1000 in two blocks appended 1.04-1.05x as fast
#: as in four of 250 (bench/audit.py's batches, alternating in one process).
BULK_ROWS = 500


class BulkWriter:
    """Runs large INSERTs in a thread of their own, each block of rows as one
    multi-row ``INSERT ... VALUES (...), (...)`` statement.

    ``executemany`` takes the GIL back for every row; one statement takes it only to
    bind its parameters, and then SQLite inserts the rows, updates the indexes and
    fills the pages without it, on the other core, while the event loop serializes
    and hashes the next block (`gateway.audit.log.append`). The gain shrank as the
    serializing got faster: 1.1-1.3x for batched appends at a million entries when it
    came, 1.04x (bench/audit.py, alternating runs) against blocks of 1000 inserted on
    the loop once entries were serialized from their `__dict__` without a sort, and
    0.97-1.03x at 300,000 entries, where SQLite's share is smaller. The connection is
    the transaction's own: the caller runs nothing else on it until the block is in.
    """

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-bulk")

    async def insert(self, conn: sqlite3.Connection, sql: str, rows: Sequence[Params]) -> None:
        statement = _multi_row(sql, len(rows))
        params = list(itertools.chain.from_iterable(rows))
        started = threading.Event()

        def run() -> None:
            started.set()
            with _translated():
                conn.execute(statement, params)

        future = asyncio.get_running_loop().run_in_executor(self._thread, run)
        # The thread needs the GIL to bind the parameters, and this one, going on to
        # the next block, would keep it for a whole switch interval (5 ms, longer than
        # a block takes) before handing it over: wait until the thread has it. It
        # lets go once SQLite runs the statement.
        started.wait(0.01)
        await _waited(future)

    def close(self) -> None:
        self._thread.shutdown(wait=True)


@functools.lru_cache(maxsize=8)
def _multi_row(sql: str, count: int) -> str:
    head, values, one = sql.rpartition(" VALUES ")
    if not values or not one.startswith("(") or not one.endswith(")"):
        raise ValueError(f"not a one-row INSERT ... VALUES (...): {sql}")
    return f"{head} VALUES {', '.join([one] * count)}"


def _open(file: Path) -> sqlite3.Connection:
    # The database holds the signed packages, whose payload is personal data: a new
    # file is readable by its owner only (0600), and SQLite gives its -wal and -shm
    # files the same mode.
    with suppress(FileExistsError):
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        for pragma in (*PRAGMAS, f"wal_autocheckpoint={BACKSTOP_PAGES}"):
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


class SQLiteDatabase(Database):
    dialect = "sqlite"
    # Writers take turns on the one connection anyway, so a group costs no parallelism
    # and saves a BEGIN, a COMMIT and an audit append per write. Every caller of a group
    # is answered at its commit: 16 keeps a callback queued behind placements (~2 ms of
    # sealing each) answered within tens of milliseconds, and 16 in flight already
    # bring those costs from ~310 to ~60 µs a callback.
    group_most = 16

    def __init__(self, conn: sqlite3.Connection, file: Path) -> None:
        self._conn = conn
        # One connection, so transactions of concurrent tasks must take turns.
        self._lock = asyncio.Lock()
        self.checkpointer = Checkpointer(file)
        self._bulk = BulkWriter()
        self.wal_syncs = WalSyncs(wal_of(file))

    @classmethod
    async def open(
        cls, path: str, data_steps: Mapping[str, DataStepFunction] | None = None
    ) -> SQLiteDatabase:
        file = Path(path)
        if not file.parent.is_dir():
            raise ConfigError(f"database directory {file.parent} does not exist (run `gateway init`)")
        try:
            # In a thread: switching to WAL may wait for another process's lock.
            conn = await asyncio.to_thread(_open, file)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open database {file}: {exc}") from None
        except OSError as exc:  # creating the file: no permission, read-only place, ...
            raise ConfigError(f"cannot create database {file}: {exc.strerror}") from None
        db = cls(conn, file)
        try:
            # From here every statement runs in a transaction begun IMMEDIATE, which
            # holds the write lock and so never waits; only `_begin` may, and it sets
            # its own timeout when it must.
            conn.execute("PRAGMA busy_timeout=0")
            await migrate(db, data_steps)
        except BaseException:
            await db.close()
            raise
        return db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            await self._begin()
            tx = SQLiteTransaction(self._conn, self._bulk)
            try:
                yield tx
            except BaseException:
                self._rollback()
                raise
            self._commit()
        tx.committed()

    async def _begin(self) -> None:
        # IMMEDIATE takes the write lock up front, so two processes never deadlock
        # upgrading read locks. The connection's busy_timeout is 0 once it is open (see
        # `open`), so this first try cannot wait: uncontended, it runs inline and saves
        # the thread hop (~100 µs of loop time, measured in bench/inbound.py). Only if
        # another process holds the lock does a thread wait for it, up to BUSY_TIMEOUT_MS.
        try:
            with _translated():
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise
                await _in_thread(self._begin_waiting)
        except BaseException:
            # Cancelled while the thread went on and began: undo it.
            self._rollback()
            raise

    def _begin_waiting(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        finally:
            self._conn.execute("PRAGMA busy_timeout=0")

    def _commit(self) -> None:
        # Inline: it writes to the WAL without an fsync (see the module docstring).
        try:
            with _translated():
                self._conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT can leave the transaction open.
            self._rollback()
            raise
        self.checkpointer.committed()

    def _rollback(self) -> None:
        # SQLite may have rolled back by itself (e.g. on SQLITE_FULL); the original
        # error is the one to report.
        if self._conn.in_transaction:
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")

    async def sync(self) -> None:
        """Commits append to the WAL without a sync (`synchronous=NORMAL`): sync it, in a
        thread (`WalSyncs`). Every process's commits are in that one file, or already
        copied into the database file by a checkpoint, which synced them (and the WAL)
        first."""
        await self.wal_syncs.sync()

    async def compact(self) -> bool:
        """Copy the WAL back and truncate it: the WAL keeps earlier versions of the pages
        a purge changed. Waits (up to the busy timeout) for readers of other processes;
        False if one still held it (the next purge's compaction tries again)."""

        def truncate() -> bool:
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            try:
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                self._conn.execute("PRAGMA busy_timeout=0")
            return not busy

        async with self._lock:
            with _translated():
                return await _in_thread(truncate)

    async def close(self) -> None:
        """Close once the transaction under way (if any) has ended, as PostgreSQL's pool
        waits for its connections: a task still writing is not cut off midway."""
        async with self._lock:
            await asyncio.to_thread(self.checkpointer.close)
            await asyncio.to_thread(self._bulk.close)
            self._conn.close()
