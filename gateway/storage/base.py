"""The storage interface every backend implements: transactions, rows, locks."""

from __future__ import annotations

import re
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from enum import IntEnum
from typing import Any

#: Values per ``IN (...)`` of `Transaction.fetchall_in`: well under SQLite's oldest limit
#: of parameters (999) and PostgreSQL's (32767).
IN_CHUNK = 500

Row = dict[str, Any]
Params = Sequence[Any]


class Lock(IntEnum):
    """What writers take turns on (:meth:`Transaction.take_turns`); the values are the
    PostgreSQL advisory-lock keys, kept here so that no two uses share one."""

    MIGRATIONS = 6961
    AUDIT_LOG = 6962
    DEBTOR_CONTACTS = 6963


class Transaction(ABC):
    dialect: str
    for_update: str = ""
    """Appended to a SELECT whose rows the transaction will change (row locks)."""
    for_share: str = ""
    """Appended to a SELECT of rows the transaction relies on unchanged until it ends:
    a change to them waits for it (readers with it do not wait for each other)."""
    _after_commit: list[Callable[[], None]] | None = None
    undone: int = 0
    """How many parts (`savepoint`) were rolled back so far: what the transaction made
    before one may be gone, and whoever remembers it for the transaction must look again."""

    def skip_locked(self, table: str) -> str:
        """Appended to a SELECT that claims rows of ``table`` (it may join others, whose
        rows are read, not locked): rows another transaction holds are skipped."""
        return ""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this transaction has committed (never if it rolls back).
        It runs on the event loop, after the commit: it can fail without undoing anything."""
        if self._after_commit is None:
            self._after_commit = []
        self._after_commit.append(callback)

    def committed(self) -> None:
        """Run the ``after_commit`` callbacks; called by the backend after COMMIT."""
        for callback in self._after_commit or ():
            callback()

    @abstractmethod
    async def take_turns(self, lock: Lock, item: str | None = None) -> None:
        """Hold ``lock`` (for ``item``, e.g. one debtor) until the transaction ends,
        waiting while another transaction holds it."""

    async def take_turns_all(self, lock: Lock, items: Sequence[str]) -> None:
        """`take_turns` on each of ``items``, in the order given (callers sort them, so
        two transactions never wait for each other in a circle)."""
        for item in items:
            await self.take_turns(lock, item)

    async def clock(self) -> float:
        """The database's clock, seconds since the epoch: the time every instance reads
        alike (limits shared by instances count by it). A database in a file on this
        host (SQLite) is shared by processes of this host only, so this host's clock."""
        return time.time()

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    async def insert_id(self, sql: str, params: Params = ()) -> int:
        """Run ``sql``, a plain INSERT of one row (no ON CONFLICT, no RETURNING) into a
        table whose key is its ``id`` column; return the new row's id."""
        return int(await self.fetchval(sql + " RETURNING id", params))

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    async def insert_many(self, sql: str, rows: Sequence[Params]) -> None:
        """``executemany`` for an INSERT of many rows (``INSERT INTO t (...) VALUES
        (?, ...)``) that the caller overlaps with its own work: a backend may run it
        off the event loop, so that the caller prepares the next rows meanwhile
        (`gateway.audit.log.append`). Nothing else may use the transaction until it
        returns."""
        await self.executemany(sql, rows)

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else next(iter(row.values()))

    async def fetchall_in(self, sql: str, values: Sequence[Any], params: Params = ()) -> list[Row]:
        """The rows of ``sql`` for every one of ``values``, `IN_CHUNK` of them a statement:
        its ``{marks}`` becomes the chunk's ``?, ?, ...``, bound after ``params``."""
        rows: list[Row] = []
        for first in range(0, len(values), IN_CHUNK):
            chunk = values[first : first + IN_CHUNK]
            rows += await self.fetchall(sql.format(marks=", ".join("?" * len(chunk))), (*params, *chunk))
        return rows

    broken: bool = False
    """Set when a savepoint could not be undone or released: the database may have
    rolled the whole transaction back (SQLite does on some I/O and memory errors), so
    nothing more may be written in it."""

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A part of the transaction that an error undoes on its own: what the block
        wrote is rolled back and the error raised, the rest of the transaction stays."""
        return _Savepoint(self)

    async def _end_part(self, *statements: str) -> None:
        try:
            for sql in statements:
                await self.execute(sql)
        except BaseException:
            self.broken = True
            raise


class _Savepoint(AbstractAsyncContextManager[None]):
    """`Transaction.savepoint` as a plain class: every report of a group takes one, and
    a generator-based context manager costs a generator and its frames each time."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def __aenter__(self) -> None:
        await self._tx.execute("SAVEPOINT part")

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            await self._tx._end_part("RELEASE SAVEPOINT part")
        elif issubclass(kind, Exception):
            self._tx.undone += 1
            await self._tx._end_part("ROLLBACK TO SAVEPOINT part", "RELEASE SAVEPOINT part")


class Database(ABC):
    dialect: str
    group_most: int = 1
    """How many concurrent writes one transaction may take (`gateway.storage.groups`)."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A read-write transaction; commits on success, rolls back on error."""

    @abstractmethod
    async def close(self) -> None: ...

    async def compact(self) -> bool:
        """Let go of copies of deleted data the backend still keeps in its files (after a
        purge); False if it could not now. A backend that keeps none does nothing here."""
        return True

    async def sync(self) -> None:
        """Make every transaction committed so far durable (on the disk, not only in the
        system's cache) before something leaves that the database must not forget after
        a power cut: a package for a partner, a checkpoint for a witness. Raises
        StorageError if the disk refuses. A backend whose commits are durable as they
        return (PostgreSQL, `synchronous_commit` on) has nothing to do here."""
        return None

    def translate_ddl(self, sql: str) -> str:
        """A migration statement in this backend's type names."""
        return sql

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


#: Query parameters of a database URL (libpq's names) that hold a password or name the
#: file that does.
SECRET_PARAMETERS = frozenset({"password", "passfile", "sslpassword"})
_PARAMETER = re.compile(r"(?<=[?&])([^&=#]*)=([^&#]*)")


def redact(url: str) -> str:
    """The URL without its passwords, fit for messages and logs: the values of query
    parameters that hold one (``?password=``, in any case or percent-encoding), and the
    password of the user info, which ends at the last ``@``: one typed without
    percent-encoding may hold ``/``, ``@``, ``?`` or ``#``. Where a URL is ambiguous,
    more is hidden rather than less."""

    def parameter(match: re.Match[str]) -> str:
        secret = urllib.parse.unquote(match[1]).strip().lower() in SECRET_PARAMETERS
        return f"{match[1]}=***" if secret else match[0]

    url = _PARAMETER.sub(parameter, url)
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"
