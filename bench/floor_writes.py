"""The floor of the outbound path's durable writes, for `bench/outbound.py`.

The gateway stores every package before it is sent and its acknowledgement after, so
that a crash loses nothing. Done the bare way, that is one row per package in a
SQLite file with the gateway's pragmas, inserted a batch per transaction, then marked
delivered a batch per transaction, with SQLite's own checkpointing: no leases, no
attempts, no audit entry, no encryption at rest, no indexes but the key. The rows hold
the same sealed bytes the gateway sent.

The issue's goal for outbound compares the gateway with a floor that stores nothing;
this is the floor its definition names ("the same crypto, the same durable write,
done the bare way"), printed beside it, not instead of it.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from gateway.storage.sqlite import PRAGMAS


def durable_writes_cpu(bodies: Sequence[str], batch: int) -> float:
    """CPU seconds per package (this thread; `sqlite3` runs in it) of storing each of
    ``bodies`` and then marking it delivered, ``batch`` rows a transaction, and the
    checkpoint that copies the last of them into the database file."""
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        try:
            return _timed(conn, bodies, batch)
        finally:
            conn.close()


def _timed(conn: sqlite3.Connection, bodies: Sequence[str], batch: int) -> float:
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    conn.execute(
        "CREATE TABLE outbox (id TEXT PRIMARY KEY, partner_id TEXT NOT NULL, sealed TEXT NOT NULL,"
        " state TEXT NOT NULL, partner_ref TEXT)"
    )
    rows = [(uuid.uuid4().hex, body) for body in bodies]
    start = time.process_time()
    for first in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO outbox (id, partner_id, sealed, state) VALUES (?, 'bench', ?, 'queued')",
            rows[first : first + batch],
        )
        conn.execute("COMMIT")
    for first in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "UPDATE outbox SET state = 'delivered', partner_ref = ? WHERE id = ?",
            [(f"ref-{i}", key) for i, (key, _) in enumerate(rows[first : first + batch], first)],
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return (time.process_time() - start) / max(len(rows), 1)
