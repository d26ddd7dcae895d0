"""Storage: one small async interface, SQLite (embedded default) or PostgreSQL.

Callers write portable SQL with ``?`` placeholders and run it inside an explicit
transaction::

    async with db.transaction() as tx:
        await tx.execute("INSERT INTO partners (id) VALUES (?)", (pid,))
        row = await tx.fetchone("SELECT status FROM partners WHERE id = ?", (pid,))

A transaction commits when the block ends and rolls back on any exception, so a failed
action leaves nothing half-written. SQLite runs one writer at a time; PostgreSQL runs
transactions side by side (READ COMMITTED), so a read that a write depends on appends
``tx.for_update`` to lock its rows (a no-op on SQLite). Schema versions live in ``gateway.storage.migrations``
and are applied when the database is opened.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.errors import ConfigError
from gateway.storage.base import Database, Lock, Params, Row, Transaction, redact
from gateway.storage.migrations import DataStepFunction
from gateway.storage.postgres import PostgresDatabase
from gateway.storage.sqlite import SQLiteDatabase

__all__ = ["Database", "Lock", "Params", "Row", "Transaction", "open_database", "redact"]


async def open_database(url: str, data_steps: Mapping[str, DataStepFunction] | None = None) -> Database:
    """Open (and migrate) the database named by ``url``: ``sqlite:///path/to/file.db``
    or ``postgresql://user@host:port/dbname``. ``data_steps``: see `gateway.storage.migrations`."""
    if url.startswith("sqlite:///"):
        return await SQLiteDatabase.open(url.removeprefix("sqlite:///"), data_steps)
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDatabase.open(url, data_steps)
    raise ConfigError(
        f"unsupported database URL {redact(url)!r}: use sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DB (database_url in gateway.toml, or GATEWAY_DATABASE_URL)"
    )
