"""Appending to the audit log, inside the caller's transaction.

An entry is in the log if and only if the action it records committed: the caller
passes the transaction that performs the action.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import rfc8785
from pydantic import BaseModel

from gateway.audit.merkle import leaf_hash
from gateway.db import Transaction
from schemas.audit import Entry


def canonical(entry: BaseModel) -> bytes:
    """RFC 8785 canonical JSON of an entry: the exact bytes that are hashed."""
    data: Any = entry.model_dump(mode="json", exclude_none=True)
    return rfc8785.dumps(data)


async def append(tx: Transaction, entries: Sequence[Entry]) -> list[int]:
    """Add entries at the end of the log; return their indices."""
    if tx.dialect == "postgresql":
        # One sequencer at a time, so indices never interleave between instances.
        await tx.execute("SELECT pg_advisory_xact_lock(6962)")
    start = await tx.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_entries")
    rows = []
    for offset, entry in enumerate(entries):
        leaf = canonical(entry)
        rows.append(
            (
                start + offset,
                leaf.decode("utf-8"),
                leaf_hash(leaf),
                entry.kind,
                getattr(entry, "partner", None),
                getattr(entry, "case", None),
                entry.at,
            )
        )
    await tx.executemany(
        "INSERT INTO audit_entries (idx, leaf, leaf_hash, kind, partner_id, case_token, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return [row[0] for row in rows]
