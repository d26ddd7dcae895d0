"""What an auditor asks of the log, as plain async functions over a `Database`.

The CLI calls these, and so can an HTTP handler of the auditor API:

- `checkpoints(db)`, `latest_checkpoint(db)`: the signed notes;
- `entries(db, EntryFilter(...))`: entries by index range and filter;
- `subject_disclosures(db, subject)`: every disclosure about one person;
- `gateway.audit.verifydb.verify_database(db, vkey)`: the full check of `gateway audit verify`;
- `gateway.audit.proofs.inclusion_proof` / `consistency_proof`: proofs by index and size.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import TYPE_CHECKING, Any

from gateway.audit import log
from gateway.audit.log import CheckpointRecord
from gateway.clock import isotime
from gateway.errors import InvalidInput
from gateway.storage import Database

if TYPE_CHECKING:
    pass

BATCH = 10_000
#: Entries per block of the case index (`audit_by_case_block`, migration 5, on
#: ``(idx / 4096, case_token)``): a lookup by case seeks once per block. The SQL text
#: `idx / 4096` must stay as the index spells it, or SQLite will not use the index.
CASE_BLOCK = 4096


def moment(text: str, name: str) -> str:
    """An RFC 3339 date or date-time (with an offset; without one it is read as UTC)
    as the log stores times: UTC, microseconds, ``Z``. Stored times all have that one
    width, so comparing them as text orders them in time."""
    try:
        if len(text.strip()) == 10:
            at = datetime.combine(date.fromisoformat(text.strip()), dtime(), UTC)
        else:
            at = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
        return isotime(at)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"{name}: {text!r} is not an RFC 3339 date or time, e.g. 2026-11-01 or 2026-11-01T08:00:00+08:00",
            status=400,
        ) from None


@dataclass(frozen=True)
class EntryFilter:
    """Which entries: index range [start, end), and optional column filters.

    `since` (inclusive) and `until` (exclusive) are RFC 3339 dates or times, any
    offset (see `moment`).
    """

    start: int = 0
    end: int | None = None
    partner: str | None = None
    case_token: str | None = None
    kind: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int | None = None


async def checkpoints(db: Database, since_size: int = 0) -> list[CheckpointRecord]:
    """The signed checkpoints from `since_size` on, each note with the witnesses'
    cosignatures gathered for it."""
    async with db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT size, note, created_at FROM audit_checkpoints WHERE size >= ? ORDER BY size",
            (since_size,),
        )
        lines = await log.cosignature_lines(tx, since_size)
    return [CheckpointRecord(r["size"], log.cosigned(r["note"], lines.get(r["size"])), r["created_at"])
            for r in rows]  # fmt: skip


async def latest_checkpoint(db: Database) -> CheckpointRecord | None:
    """The latest signed checkpoint, with the witnesses' cosignatures gathered for it."""
    async with db.transaction() as tx:
        latest = await log.latest_checkpoint(tx)
        if latest is None:
            return None
        lines = await log.cosignature_lines(tx, latest.size)
    return CheckpointRecord(latest.size, log.cosigned(latest.note, lines.get(latest.size)), latest.created_at)


async def entries(db: Database, where: EntryFilter | None = None) -> list[dict[str, Any]]:
    """Matching entries in log order: ``{"idx", "entry"}`` with the parsed leaf."""
    where = where or EntryFilter()
    since = moment(where.since, "since") if where.since is not None else None
    until = moment(where.until, "until") if where.until is not None else None
    clauses: list[str] = ["idx >= ?"]
    params: list[object] = [where.start]
    for column, value, op in (
        ("idx", where.end, "<"),
        # With a case, its index (far more selective) must not lose to the partner's:
        # an expression over the column keeps SQLite's planner off the latter.
        ("partner_id" if where.case_token is None else "partner_id || ''", where.partner, "="),
        ("case_token", where.case_token, "="),
        ("kind", where.kind, "="),
        ("at", since, ">="),
        ("at", until, "<"),
    ):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    async with db.transaction() as tx:
        if where.case_token is not None:
            # One seek per block of the case index, over the blocks of the range.
            end = await tx.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries")
            if where.end is not None:
                end = min(end, where.end)
            blocks = range(max(where.start, 0) // CASE_BLOCK, (end - 1) // CASE_BLOCK + 1)
            if not blocks:
                return []
            listed = ", ".join(str(block) for block in blocks)
            clauses.append(f"idx / {CASE_BLOCK} IN ({listed})")
        sql = f"SELECT idx, leaf FROM audit_entries WHERE {' AND '.join(clauses)} ORDER BY idx"
        if where.limit is not None:
            sql += f" LIMIT {int(where.limit)}"
        rows = await tx.fetchall(sql, params)
    return [{"idx": row["idx"], "entry": json.loads(row["leaf"])} for row in rows]


async def subject_disclosures(db: Database, subject: str) -> list[dict[str, Any]]:
    """Every disclosure about the person whose audit token is `subject` (PIPL art. 45).

    Leaves are canonical JSON, so the token appears in exactly one spelling and a
    text match finds every disclosure; each match is parsed and checked again.
    """
    pattern = f'%"subject":{json.dumps(subject)}%'
    async with db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT idx, leaf FROM audit_entries WHERE kind = 'disclosure' AND leaf LIKE ?"
            " ORDER BY idx",
            (pattern,),
        )
    report = []
    for row in rows:
        entry = json.loads(row["leaf"])
        if entry.get("subject") != subject:
            continue
        report.append(
            {
                "idx": row["idx"],
                "at": entry["at"],
                "partner": entry["partner"],
                "purpose": entry["purpose"],
                "legal_basis": entry["legal_basis"],
                "fields": [f"{f['path']} ({f['transform']})" for f in entry["fields"]],
                "package_id": entry["package_id"],
                "actor": entry["actor"],
            }
        )
    return report


async def stream_entries(db: Database, start: int = 0) -> AsyncIterator[list[dict[str, Any]]]:
    """Entries in index order, in batches, each batch its own short transaction so that
    appends go on meanwhile. Keyset paging: OFFSET would re-read the log per batch."""
    after = start - 1
    while True:
        async with db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT idx, leaf, leaf_hash FROM audit_entries WHERE idx > ? ORDER BY idx LIMIT ?",
                (after, BATCH),
            )
        if not rows:
            return
        yield rows
        after = rows[-1]["idx"]
