"""Concurrent writes that share a transaction: one BEGIN, one audit append, one COMMIT.

Where the database runs one writer at a time (SQLite), requests that arrive together
would wait for each other's transactions anyway. The group writer takes the writes
queued meanwhile, up to `Database.group_most`, and runs them one after the other in
one transaction, each in a savepoint of its own::

    result = await gw.writer.run(job)   # job(tx, entries) -> result

A job writes through ``tx`` and adds the audit entries of what it did to ``entries``.
If it raises, what it wrote and the entries it added are undone, its caller gets the
error, and the other jobs of the group go on. Nothing is acknowledged before the
commit: if the commit (or the audit append) fails, every caller of the group gets
that error and nothing of the group is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.audit import log as audit_log
from gateway.db import Transaction
from schemas.audit import Entry

if TYPE_CHECKING:
    from gateway.core import Gateway

T = TypeVar("T")
Job = Callable[[Transaction, list[Entry]], Awaitable[T]]


@dataclass
class _Queued(Generic[T]):
    job: Job[T]
    answer: asyncio.Future[T]


class GroupWriter:
    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._queue: list[_Queued[Any]] = []
        self._writing = 0
        self._writer: asyncio.Task[None] | None = None
        #: Groups committed and the jobs they held, for tests and benchmarks.
        self.groups = 0
        self.jobs = 0

    async def run(self, job: Job[T]) -> T:
        """``job`` done and committed, with whatever jobs were queued with it."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(job, answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        return await answer

    @property
    def queued(self) -> int:
        """Jobs taken and not yet answered: waiting, or in the group being written."""
        return len(self._queue) + self._writing

    async def close(self) -> None:
        """Wait until every queued job is written (or has failed)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        try:
            while self._queue:
                most = self._gw.db.group_most
                group, self._queue = self._queue[:most], self._queue[most:]
                self._writing = len(group)
                try:
                    await self._write(group)
                finally:
                    self._writing = 0
                # Let the answers go out and the next requests in before the next group.
                await asyncio.sleep(0)
        finally:
            self._writer = None
            for queued in self._queue:  # only when cancelled: nobody will write them
                queued.answer.cancel()

    async def _write(self, group: list[_Queued[Any]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            async with self._gw.db.transaction() as tx:
                entries: list[Entry] = []
                if len(group) == 1:
                    # Alone, a job needs no savepoint: its error rolls back the lot,
                    # and reaches its caller below.
                    outcomes.append((True, await group[0].job(tx, entries)))
                else:
                    for queued in group:
                        outcomes.append(await _in_savepoint(tx, queued.job, entries))
                await audit_log.append(tx, entries, signer=self._gw.audit_signer)
        except Exception as exc:
            # Nothing of the group was stored. A job refused on its own keeps its own
            # answer; the others hear why the group failed. The next group is tried
            # all the same.
            unwritten = [(True, None)] * (len(group) - len(outcomes))
            for queued, (ok, outcome) in zip(group, outcomes + unwritten, strict=True):
                if not queued.answer.done():
                    queued.answer.set_exception(exc if ok else outcome)
            return
        except BaseException:
            for queued in group:
                queued.answer.cancel()
            raise
        self.groups += 1
        self.jobs += len(group)
        for queued, (ok, outcome) in zip(group, outcomes, strict=True):
            if queued.answer.done():
                continue  # its caller was cancelled; the write stands, as it committed
            if ok:
                queued.answer.set_result(outcome)
            else:
                queued.answer.set_exception(outcome)


async def _in_savepoint(tx: Transaction, job: Job[Any], entries: list[Entry]) -> tuple[bool, Any]:
    """(True, result) with the job's entries added to ``entries``, or (False, error)
    with everything it wrote undone."""
    own: list[Entry] = []
    try:
        async with tx.savepoint():
            result = await job(tx, own)
    except Exception as exc:
        return False, exc
    entries.extend(own)
    return True, result
