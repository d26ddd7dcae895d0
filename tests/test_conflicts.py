"""Transactions the database undoes to settle a conflict are run again, not failed.

On PostgreSQL, instances write side by side; two of them taking the same rows in
opposite orders deadlock, and the server undoes one. The group writer runs that job
again from the start (with the audit entries it makes), so neither caller sees an error.
On SQLite writers take turns, so the same two jobs never conflict at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from gateway.storage import Database, Transaction
from gateway.storage.groups import GroupWriter
from schemas.audit import Entry, KeyRotated


async def test_a_deadlocked_job_is_run_again_and_both_succeed(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE pair (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        await tx.executemany("INSERT INTO pair (id, n) VALUES (?, 0)", [("a",), ("b",)])
    recorded: list[str] = []

    async def record(tx: Transaction, entries: list[Entry]) -> None:
        recorded.extend(e.new_kid for e in entries if isinstance(e, KeyRotated))

    writer = GroupWriter(db, record)
    took = {"a": asyncio.Event(), "b": asyncio.Event()}
    runs: list[str] = []

    def job(first: str, second: str) -> Callable[[Transaction, list[Entry]], Awaitable[str]]:
        async def run(tx: Transaction, entries: list[Entry]) -> str:
            runs.append(first)
            await tx.execute("UPDATE pair SET n = n + 1 WHERE id = ?", (first,))
            took[first].set()
            # Side by side, each waits until the other holds its first row: a deadlock.
            # Taking turns (SQLite), the other has not begun; go on after a moment.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(took[second].wait(), 0.5)
            await tx.execute("UPDATE pair SET n = n + 1 WHERE id = ?", (second,))
            entries.append(
                KeyRotated(at="2026-01-01T00:00:00.000000Z", actor="t", key="bank-signing", old_kid="x",
                           new_kid=first)
            )
            return first

        return run

    done = await asyncio.gather(writer.run(job("a", "b")), writer.run(job("b", "a")))
    await writer.close()
    assert sorted(done) == ["a", "b"]
    async with db.transaction() as tx:
        counts = {r["id"]: r["n"] for r in await tx.fetchall("SELECT id, n FROM pair")}
    assert counts == {"a": 2, "b": 2}  # each job's two updates, once: the undone run left nothing
    assert sorted(recorded) == ["a", "b"]  # and its audit entry once
    assert len(runs) == (3 if db.dialect == "postgresql" else 2)
