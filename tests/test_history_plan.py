"""A person's contact history is read through ranges of indexes, whatever its length.

Each contact report reads the history of its subject, so a statement that scanned all
of a person's events would make every report slower as the cases age (measured with
``bench/inbound.py --history``). The plan is the database's own answer: SQLite's
``EXPLAIN QUERY PLAN``; PostgreSQL's ``EXPLAIN`` with sequential scans priced out, which
shows that the indexes' terms match the statement's (a partial index whose predicate
the statement does not imply is never chosen, whatever the cost)."""

from __future__ import annotations

import pytest

from gateway.delivery.presend import recorded_statement
from gateway.lifecycle import erasure
from gateway.lifecycle.purge import originals_statement, texts_statement
from gateway.storage import Database
from gateway.supervision.history import history_statement

START, END = "2026-11-01T00:00:00Z", "2026-11-17T00:00:00Z"


def _params(subjects: list[str]) -> tuple[object, ...]:
    return (*subjects, START, END, 7, *subjects, START, START, *subjects, 7)


async def _plan(db: Database, sql: str, params: tuple[object, ...]) -> str:
    async with db.transaction() as tx:
        if tx.dialect == "sqlite":
            rows = await tx.fetchall("EXPLAIN QUERY PLAN " + sql, params)
            return "\n".join(row["detail"] for row in rows)
        await tx.execute("SET LOCAL enable_seqscan = off")
        rows = await tx.fetchall("EXPLAIN " + sql, params)
        return "\n".join(row["QUERY PLAN"] for row in rows)


@pytest.mark.parametrize("count", [1, 3])
async def test_the_history_statement_reads_ranges_of_its_indexes(db: Database, count: int) -> None:
    subjects = [f"subj_{i}" for i in range(count)]
    plan = await _plan(db, history_statement(count), _params(subjects))
    # Contacts in the window and requests: the (subject, type, time) index.
    assert "events_subject_type" in plan, plan
    # Third-party contacts before the window: the partial index of those alone.
    assert "events_third_party" in plan, plan
    assert "SCAN events" not in plan and "Seq Scan on events" not in plan, plan


#: What finds a person's events by subject token outside the history, as the code
#: writes it: an erasure's count of kept originals, the purges it runs, the
#: dispatcher's look-up of its own stored deliveries (`gateway.delivery.presend`).
SUBJECT_LOOKUPS = [
    (erasure.KEPT_ORIGINALS, ("subj_1",)),
    (texts_statement(erasure.BY_SUBJECT), ("subj_1",)),
    (originals_statement(erasure.BY_SUBJECT), (START, "subj_1")),
    (recorded_statement(2, 2), ("subj_1", "subj_2", "pkg_1", "pkg_2")),
]


@pytest.mark.parametrize(("sql", "params"), SUBJECT_LOOKUPS)
async def test_a_persons_events_are_found_through_an_index(db: Database, sql: str, params: tuple) -> None:
    # Since migration 17 the (subject, type, time) index is the only one led by the
    # subject: the one led by (subject, time) was written by every report and read by none.
    plan = await _plan(db, sql, params)
    assert "events_subject_type" in plan or "events_third_party" in plan, plan
    assert "SCAN events" not in plan and "Seq Scan on events" not in plan, plan
