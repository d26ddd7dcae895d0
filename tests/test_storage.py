"""The storage interface, on whichever backend the suite runs: nothing half-written."""

from __future__ import annotations

import asyncio

import pytest

from gateway.db import Database
from gateway.errors import StorageError

INSERT = "INSERT INTO api_tokens (id, role, secret_hash, created_at) VALUES (?, ?, 'x', 'now')"


async def count(db: Database) -> int:
    async with db.transaction() as tx:
        return int(await tx.fetchval("SELECT COUNT(*) FROM api_tokens"))


async def add_token(db: Database, token_id: str) -> None:
    async with db.transaction() as tx:
        await tx.execute(INSERT, (token_id, "auditor"))


async def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    with pytest.raises(StorageError, match="refused the change"):
        async with db.transaction() as tx:
            await tx.execute(INSERT, ("a", "auditor"))
            await tx.execute(INSERT, ("b", "nobody"))  # not a role: the CHECK refuses it
    assert await count(db) == 0


async def test_a_cancelled_transaction_leaves_nothing_and_the_database_stays_usable(db: Database) -> None:
    started = asyncio.Event()

    async def slow() -> None:
        async with db.transaction() as tx:
            await tx.execute(INSERT, ("a", "auditor"))
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await count(db) == 0
    await asyncio.gather(*(add_token(db, f"t{n}") for n in range(5)))
    assert await count(db) == 5


async def test_question_marks_inside_literals_are_not_parameters(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO api_tokens (id, role, secret_hash, label, created_at)"
            " VALUES (?, 'auditor', 'x', 'who?', ?)",
            ("q", "now"),
        )
        assert (
            await tx.fetchval("SELECT label FROM api_tokens WHERE id = ? AND label = 'who?'", ("q",))
            == "who?"
        )
