"""SQLite backend (WAL), the embedded default."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiosqlite

from gateway.db import Database, Params, Row, Transaction
from gateway.db.migrations import migrate
from gateway.errors import ConfigError, StorageError


class SQLiteTransaction(Transaction):
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _translated():
            cursor = await self._conn.execute(sql, params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with _translated():
            await self._conn.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        with _translated():
            # One trip to the database thread, not two (execute, then fetch).
            rows = await self._conn.execute_fetchall(sql, params)
        return [dict(row) for row in rows]


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise StorageError(f"database refused the change: {exc}") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"database error: {exc}") from exc


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # One connection, so transactions of concurrent tasks must take turns.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SQLiteDatabase:
        file = Path(path)
        if not file.parent.is_dir():
            raise ConfigError(f"database directory {file.parent} does not exist (run `gateway init`)")
        try:
            conn = await aiosqlite.connect(file, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open database {file}: {exc}") from None
        conn.row_factory = sqlite3.Row
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=10000",
        ):
            await conn.execute(f"PRAGMA {pragma}")
        db = cls(conn)
        await migrate(db)
        return db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            # IMMEDIATE takes the write lock up front, so two processes never deadlock
            # upgrading read locks.
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield SQLiteTransaction(self._conn)
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            else:
                await self._conn.execute("COMMIT")

    async def close(self) -> None:
        await self._conn.close()
