"""Storage: one small async interface, SQLite now, PostgreSQL later.

Callers write portable SQL with ``?`` placeholders and run it inside an explicit
transaction::

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO partners (id) VALUES (?)", (pid,))
        row = await tx.fetchone("SELECT status FROM partners WHERE id = ?", (pid,))

A transaction commits when the block ends and rolls back on any exception, so a failed
action leaves nothing half-written. Schema versions live in ``gateway.db.migrations``
and are applied when the database is opened.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from gateway.errors import ConfigError

Row = dict[str, Any]
Params = Sequence[Any]


class Transaction(ABC):
    dialect: str

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else next(iter(row.values()))


class Database(ABC):
    dialect: str

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A read-write transaction; commits on success, rolls back on error."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_database(url: str) -> Database:
    """Open (and migrate) the database named by ``url``: ``sqlite:///path/to/file.db``."""
    if url.startswith("sqlite:///"):
        from gateway.db.sqlite import SQLiteDatabase

        return await SQLiteDatabase.open(url.removeprefix("sqlite:///"))
    raise ConfigError(
        f"unsupported database URL {url!r}: use sqlite:///PATH (set database_url in gateway.toml)"
    )
