"""Concurrent writes that share a transaction: one BEGIN, one audit append, one COMMIT.

Where the database runs one writer at a time (SQLite), requests that arrive together
would wait for each other's transactions anyway. The group writer takes the writes
queued meanwhile, up to `Database.group_most`, and runs them one after the other in
one transaction, each in a savepoint of its own::

    result = await gw.writer.run(job)   # job(tx, entries) -> result

A job writes through ``tx`` and adds the audit entries of what it did to ``entries``.
If it raises, what it wrote and the entries it added are undone, its caller gets the
error, and the other jobs of the group go on. Nothing is acknowledged before the
commit: if the commit (or the audit append) fails, every caller of the group gets that
error, refused ones included (a refusal may rest on a sibling's write that is now
gone), and nothing of the group is stored. Where transactions run side by side
(PostgreSQL, ``group_most == 1``), each job runs in a transaction of its own, in its
caller's task, as if there were no writer.

A caller cancelled while its job still waits takes the job back: nothing of it is
written. Once the job has begun, the cancellation waits for the group and the caller
gets the job's outcome (what was written is known, never lost in an interruption); its
task still says it was asked to stop (`Task.cancelling()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from gateway.errors import StorageError, TransactionConflict
from gateway.storage.base import Database, Transaction
from schemas.audit import Entry

T = TypeVar("T")
Job = Callable[[Transaction, list[Entry]], Awaitable[T]]
#: Tries of a transaction the database keeps undoing to settle conflicts.
CONFLICT_ATTEMPTS = 5
#: Writes a transaction's audit entries into it, just before it commits.
Record = Callable[[Transaction, list[Entry]], Awaitable[object]]


@dataclass
class _Queued(Generic[T]):
    job: Job[T]
    answer: asyncio.Future[T]


class GroupWriter:
    def __init__(self, db: Database, record: Record) -> None:
        self._db = db
        self._record = record
        self._queue: list[_Queued[Any]] = []
        self._writing = 0
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        #: Transactions committed and the jobs they held, for tests and benchmarks.
        self.groups = 0
        self.jobs = 0

    async def run(self, job: Job[T]) -> T:
        """``job`` done and committed, with whatever jobs were queued with it."""
        if self._closing:
            raise StorageError("the gateway is shutting down and takes no more writes; try again")
        if self._db.group_most == 1:
            return await self._alone(job)
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queued = _Queued(job, answer)
        self._queue.append(queued)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
            self._writer.add_done_callback(self._abandon)
        try:
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            if answer.cancelled():
                raise StorageError(
                    "not written: the gateway's writer stopped (is it shutting down?); try again"
                ) from None
            if queued in self._queue:
                self._queue.remove(queued)  # not begun: nothing of it is written
                raise
        # Begun, so it commits or fails with its group whatever the caller does: see
        # it through and tell the caller, who may then stop (`Task.cancelling()`
        # still says it was asked to).
        return await asyncio.shield(answer)

    @property
    def queued(self) -> int:
        """Jobs taken and not yet answered: waiting, or in the group being written."""
        return len(self._queue) + self._writing

    @property
    def writing(self) -> int:
        """Jobs in the group being written."""
        return self._writing

    async def close(self) -> None:
        """Take no more jobs; wait until every queued one is written or has failed."""
        self._closing = True
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer])

    async def _alone(self, job: Job[T]) -> T:
        """``job`` in a transaction of its own; run again from the start if the database
        undid it to settle a conflict (a deadlock or serialization failure between
        instances), a few times with a short random wait."""


        async def once() -> T:
            entries: list[Entry] = []
            async with self._db.transaction() as tx:
                result = await job(tx, entries)
                await self._record(tx, entries)
            return result

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransactionConflict),
            stop=stop_after_attempt(CONFLICT_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            reraise=True,
        )
        result: T = await retrying(once)
        self.groups += 1
        self.jobs += 1
        return result

    async def _write_all(self) -> None:
        while self._queue:
            most = self._db.group_most
            group, self._queue = self._queue[:most], self._queue[most:]
            self._writing = len(group)
            try:
                await self._write(group)
            finally:
                self._writing = 0
            # Let the answers go out and the next requests in before the next group.
            await asyncio.sleep(0)

    def _abandon(self, writer: asyncio.Task[None]) -> None:
        """The writer ended: if it was cancelled (or died), nobody will write what is
        queued, unless a new writer took over already."""
        if self._writer is not writer or (not writer.cancelled() and writer.exception() is None):
            return
        for queued in self._queue:
            queued.answer.cancel()
        self._queue.clear()

    async def _write(self, group: list[_Queued[Any]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            async with self._db.transaction() as tx:
                entries: list[Entry] = []
                if len(group) == 1:
                    # Alone, a job needs no savepoint: its error rolls back the lot,
                    # and reaches its caller below.
                    outcomes.append((True, await group[0].job(tx, entries)))
                else:
                    for queued in group:
                        outcomes.append(await _in_savepoint(tx, queued.job, entries))
                        # The statements run inline: let the loop take in requests
                        # between reports instead of stalling for the whole group.
                        await asyncio.sleep(0)
                await self._record(tx, entries)
        except Exception as exc:
            # Nothing of the group was stored; the next group is tried all the same.
            for queued in group:
                queued.answer.set_exception(exc)
            return
        except BaseException:
            for queued in group:
                queued.answer.cancel()
            raise
        self.groups += 1
        self.jobs += len(group)
        # Callers never cancel their answers (they wait through `asyncio.shield`), so
        # each is still open here.
        for queued, (ok, outcome) in zip(group, outcomes, strict=True):
            if ok:
                queued.answer.set_result(outcome)
            else:
                queued.answer.set_exception(outcome)


async def _in_savepoint(tx: Transaction, job: Job[Any], entries: list[Entry]) -> tuple[bool, Any]:
    """(True, result) with the job's entries added to ``entries``, or (False, error)
    with everything it wrote undone. If the savepoint itself could not be undone or
    released (the transaction is gone), the error ends the whole group."""
    own: list[Entry] = []
    try:
        async with tx.savepoint():
            result = await job(tx, own)
    except Exception as exc:
        if tx.broken:
            raise
        return False, exc
    entries.extend(own)
    return True, result
