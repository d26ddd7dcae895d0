"""The storage interface, on whichever backend the suite runs: nothing half-written."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import StorageError
from gateway.storage import Database
from gateway.storage.sqlite import BULK_ROWS

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


AUDIT_ROW = (
    "INSERT INTO audit_entries (idx, leaf, leaf_hash, kind, partner_id, case_token, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def audit_rows(first: int, count: int) -> list[tuple]:
    # Every kind of value a row holds: text beyond ASCII, bytes and bytearrays, NULLs.
    return [
        (
            n,
            f'{{"n":{n},"名":"张三 {n}"}}',
            (bytearray if n % 2 else bytes)(n.to_bytes(32, "big")),
            "disclosure",
            None if n % 3 == 0 else f"partner-{n % 7}",
            None if n % 5 == 0 else f"case_{n:032x}",
            f"2026-12-01T00:00:{n % 60:02d}.000000Z",
        )
        for n in range(first, first + count)
    ]


async def test_a_large_insert_stores_every_row_as_given(db: Database) -> None:
    rows = audit_rows(0, 2 * BULK_ROWS + 40)  # two blocks and a remainder, where SQLite cuts them up
    async with db.transaction() as tx:
        await tx.insert_many(AUDIT_ROW, rows)
    async with db.transaction() as tx:
        stored = await tx.fetchall(
            "SELECT idx, leaf, leaf_hash, kind, partner_id, case_token, at FROM audit_entries ORDER BY idx"
        )
    assert [(r["idx"], r["leaf"], bytes(r["leaf_hash"]), r["kind"], r["partner_id"], r["case_token"], r["at"])
            for r in stored] == [(*row[:2], bytes(row[2]), *row[3:]) for row in rows]


async def test_a_large_insert_with_a_refused_row_leaves_nothing(db: Database) -> None:
    rows = audit_rows(0, 2 * BULK_ROWS)
    rows[BULK_ROWS + 5] = (5, *rows[BULK_ROWS + 5][1:])  # the second block repeats an index of the first
    with pytest.raises(StorageError, match="refused the change"):
        async with db.transaction() as tx:
            await tx.insert_many(AUDIT_ROW, rows)
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM audit_entries") == 0
        await tx.insert_many(AUDIT_ROW, audit_rows(0, BULK_ROWS + 1))  # and the database stays usable
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT COUNT(*) FROM audit_entries") == BULK_ROWS + 1


EVENT = (
    "INSERT INTO events (partner_id, case_ref, case_id, subject_token, type, occurred_at, received_at,"
    " source, body) VALUES (?, 'ref', 'C-1', 'subj', 'accepted', 'now', 'now', 'callback', '{}')"
)


async def test_insert_id_is_the_id_of_the_row_just_inserted(db: Database) -> None:
    async with db.transaction() as tx:
        first = await tx.insert_id(EVENT, ("acme",))
        await tx.execute(INSERT, ("between", "auditor"))  # another table's row in between
        second = await tx.insert_id(EVENT, ("bank",))
        rows = await tx.fetchall("SELECT id, partner_id FROM events ORDER BY id")
    assert second > first
    assert rows == [{"id": first, "partner_id": "acme"}, {"id": second, "partner_id": "bank"}]


async def test_a_refused_insert_gives_no_id(db: Database) -> None:
    with pytest.raises(StorageError, match="refused the change"):
        async with db.transaction() as tx:
            await tx.insert_id(EVENT, (None,))  # partner_id is NOT NULL


async def test_fetchall_in_reads_every_chunk_of_values(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.executemany(EVENT, [(f"p{i}",) for i in range(1200)])
        wanted = [f"p{i}" for i in range(1200)] + ["nobody"]
        rows = await tx.fetchall_in(
            "SELECT partner_id FROM events WHERE partner_id != ? AND partner_id IN ({marks})",
            wanted,
            ("p7",),
        )
    assert sorted(r["partner_id"] for r in rows) == sorted(f"p{i}" for i in range(1200) if i != 7)
