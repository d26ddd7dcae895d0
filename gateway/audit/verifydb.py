"""`gateway audit verify` over the database: every entry and checkpoint, and the
writer's tree state for entries not yet signed; a SQLite log read by worker processes
in ranges (`gateway.audit.parallel`), any other streamed in order through one
`LogVerifier`. Deep checks add the canonical form, the schema and the lookup columns
searches trust (`gateway.audit.query`)."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.audit import log, parallel, ranges
from gateway.audit.entrycheck import Progress
from gateway.audit.errors import VerificationFailed
from gateway.audit.verify import LogVerifier, Summary, WitnessPolicy, start_verifier
from gateway.storage import Database

if TYPE_CHECKING:
    from gateway.audit.checkpoint import Checkpoint

from gateway.audit.query import BATCH, stream_entries


async def verify_database(
    db: Database,
    vkey: str,
    progress: Progress | None = None,
    *,
    deep: bool = True,
    workers: int | None = None,
    known: Checkpoint | None = None,
    witnesses: WitnessPolicy | None = None,
) -> Summary:
    """`gateway audit verify`: every entry and checkpoint in the database, plus the
    writer's tree state for entries not yet signed. Raises VerificationFailed.

    `known`: a checkpoint the auditor kept, which the log must extend; `witnesses`: the
    cosignatures the latest checkpoint must carry.

    `deep=False` leaves out the per-entry canonical-form and schema lint and keeps
    every cryptographic check (see `LogVerifier`). A large SQLite log is checked by
    worker processes (`gateway.audit.parallel`), `workers` of them (by default one per
    CPU, at most 8); ``workers=1`` keeps it in this process.
    """
    lookup = await first_lookup_mismatch(db) if deep else None
    try:
        trust = Trust(vkey, known, witnesses)
        summary = await _verify_log(db, trust, progress, deep=deep, workers=workers)
    except VerificationFailed as exc:
        # A problem with the checkpoints themselves (no entry index) or at an entry
        # before the column's comes first, as in log order.
        if lookup is None or exc.index is None or exc.index <= lookup[0]:
            raise
        summary = None
    if lookup is not None:
        raise VerificationFailed(lookup[1], index=lookup[0])
    assert summary is not None
    return summary


#: The columns searches filter on (`entries`, `subject_disclosures`), and the member of
#: the entry each one copies: a search trusts them, so verify checks them (deep).
LOOKUP_COLUMNS = (("kind", "kind"), ("partner_id", "partner"), ("case_token", "case"), ("at", "at"))


async def first_lookup_mismatch(db: Database) -> tuple[int, str] | None:
    """The first entry whose lookup columns disagree with its leaf, and how; None if
    none does. Changing a column would hide an entry from `gateway audit log --partner`
    or from a subject's report while the leaves, and so the tree, stay intact."""
    path = await _sqlite_file(db)
    if path:
        # SQLite compares in SQL (json_extract, ~3 µs an entry against ~14 in Python),
        # on a read-only connection of its own, in a thread.
        return await asyncio.to_thread(_lookup_mismatch_sqlite, path)
    after = -1
    columns = ", ".join(column for column, _ in LOOKUP_COLUMNS)
    while True:
        async with db.transaction() as tx:
            rows = await tx.fetchall(
                f"SELECT idx, leaf, {columns} FROM audit_entries WHERE idx > ? ORDER BY idx LIMIT ?",
                (after, BATCH),
            )
        if not rows:
            return None
        for row in rows:
            try:
                entry = json.loads(row["leaf"])
            except (ValueError, TypeError):
                continue  # not an entry at all (or NULL): the per-entry checks name it
            if isinstance(entry, dict):
                found = _lookup_problem(row["idx"], [row[c] for c, _ in LOOKUP_COLUMNS],
                                        [entry.get(m) for _, m in LOOKUP_COLUMNS])  # fmt: skip
                if found:
                    return found
        after = rows[-1]["idx"]


def _lookup_mismatch_sqlite(path: str) -> tuple[int, str] | None:
    stored = ", ".join(column for column, _ in LOOKUP_COLUMNS)
    copied = ", ".join(f"json_extract(leaf, '$.{member}')" for _, member in LOOKUP_COLUMNS)
    differs = " OR ".join(f"{c} IS NOT json_extract(leaf, '$.{m}')" for c, m in LOOKUP_COLUMNS)
    conn = ranges.connect(path)
    conn.text_factory = str
    try:
        row = conn.execute(
            f"SELECT idx, {stored}, {copied} FROM audit_entries"
            # A leaf that is not a JSON object is the lint's to name (json_extract would
            # fail on it): CASE, as AND does not promise an order of evaluation.
            f" WHERE CASE WHEN json_valid(leaf) AND json_type(leaf) = 'object' THEN ({differs}) ELSE 0 END"
            " ORDER BY idx LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    n = len(LOOKUP_COLUMNS)
    return _lookup_problem(row[0], list(row[1 : n + 1]), list(row[n + 1 :]))


def _lookup_problem(index: int, stored: list[Any], copied: list[Any]) -> tuple[int, str] | None:
    for (column, member), have, want in zip(LOOKUP_COLUMNS, stored, copied, strict=True):
        if have != want:
            return index, (
                f"the {column} column reads {have!r} but the entry's {member} is {want!r}: "
                f"searches by {member} would miss or misplace it"
            )
    return None


async def _sqlite_file(db: Database) -> str:
    """The file of a SQLite database ("" for another backend or an in-memory one)."""
    if db.dialect != "sqlite":
        return ""
    async with db.transaction() as tx:
        files = await tx.fetchall("PRAGMA database_list")
    return str(next((r["file"] for r in files if r["name"] == "main"), ""))


@dataclass(frozen=True)
class Trust:
    """What the verifier trusts and requires: the key, a kept checkpoint, witnesses."""

    vkey: str
    known: Checkpoint | None = None
    witnesses: WitnessPolicy | None = None

    def verifier(self, notes: list[tuple[int, str]], progress: Progress | None, deep: bool) -> LogVerifier:
        return start_verifier(
            self.vkey, notes, known=self.known, witnesses=self.witnesses, progress=progress, deep=deep
        )


async def _verify_log(
    db: Database, trust: Trust, progress: Progress | None, *, deep: bool, workers: int | None
) -> Summary:
    if db.dialect == "sqlite":
        path = await _sqlite_file(db)
        if path:
            # A second, read-only connection in a thread: one snapshot of the whole
            # log (WAL readers do not block the writer), leaves read as UTF-8 bytes
            # without a str round trip, and no event-loop hop per batch.
            stop = threading.Event()
            try:
                return await asyncio.to_thread(
                    _verify_sqlite_file, path, trust, progress, deep, workers=workers, stop=stop
                )
            finally:
                stop.set()  # cancelled (Ctrl-C): the thread stops its workers too
    return await _verify_streamed(db, trust, progress, deep)


def _verify_sqlite_file(
    path: str,
    trust: Trust,
    progress: Progress | None,
    deep: bool,
    *,
    workers: int | None = None,
    min_entries: int | None = None,
    range_size: int | None = None,
    stop: threading.Event | None = None,
) -> Summary:
    """The bulk read of a SQLite file, in this thread or, for a log of `min_entries`
    or more (by default `parallel.MIN_ENTRIES`) when more than one process is to be
    had, by this process and worker processes, `range_size` entries a range
    (`parallel.RANGE`)."""
    conn = ranges.connect(path)
    try:
        conn.execute("BEGIN")  # a read transaction: entries, checkpoints and state agree
        # Each alone, as SQLite answers a lone MIN or MAX of the key from the b-tree's edge.
        low, high = conn.execute(
            "SELECT (SELECT MIN(idx) FROM audit_entries), (SELECT MAX(idx) FROM audit_entries)"
        ).fetchone()
        # The quick checks take an ordered read for one of distinct integers, as the
        # table's rowid makes it; on a table made again without one, row by row.
        keyed = parallel.keyed_by_index(conn)
        checkers = _range_workers(path, keyed, low, high, deep, workers, min_entries, range_size)
        try:
            verifier = trust.verifier(_sqlite_notes(conn), progress, deep)
            state = conn.execute("SELECT size, nodes FROM audit_tree WHERE id = 1").fetchone()
            if checkers is not None:
                checkers.feed(verifier, conn, stop)
            else:
                _feed_in_process(conn, verifier, deep=deep, keyed=keyed)
        finally:
            if checkers is not None:
                checkers.close()
        conn.execute("COMMIT")
    finally:
        conn.close()
    if state is None:
        return verifier.finish(require_signed=False)
    tree = log.tree_from_row({"size": state[0], "nodes": state[1]})
    return verifier.finish(require_signed=False, state=(tree.size, tree.root()))


def _range_workers(
    path: str,
    keyed: bool,
    low: int | None,
    high: int | None,
    deep: bool,
    workers: int | None,
    min_entries: int | None,
    range_size: int | None,
) -> parallel.RangeWorkers | None:
    """Worker processes for a log of `min_entries` or more, when there is more than one
    worker to be had; they start at once and read while the checkpoints are checked."""
    threshold = parallel.MIN_ENTRIES if min_entries is None else min_entries
    pool = parallel.worker_count(workers)
    if not keyed or high is None or low is None or low < 0 or high + 1 < threshold or pool < 2:
        return None
    # Workers cover every index of [0, high]; a negative one, which the read in order
    # meets first, stays with the in-process read.
    return parallel.RangeWorkers(
        path, high + 1, deep=deep, workers=pool, range_size=range_size or parallel.RANGE
    )


def _sqlite_notes(conn: Any) -> list[tuple[int, str]]:
    """(size, note) of every checkpoint, each note with its stored cosignatures."""
    notes = conn.execute("SELECT size, note FROM audit_checkpoints ORDER BY size").fetchall()
    lines = log.group_lines(conn.execute(log.COSIGNATURES_SQL, (0,)).fetchall())
    return [(size, log.cosigned(note.decode("utf-8"), lines.get(size))) for size, note in notes]


def _feed_in_process(conn: Any, verifier: LogVerifier, *, deep: bool, keyed: bool) -> None:
    """Every entry, in index order, read and checked in this thread."""
    cursor = conn.execute(f"{ranges.ENTRIES_SQL} ORDER BY idx")
    while rows := cursor.fetchmany(ranges.BULK):
        if keyed:
            verifier.feed_ordered(rows)
        else:
            verifier.feed(rows)


def _stored_row(row: dict[str, Any]) -> tuple[int, Any, bytes]:
    """An audit_entries row as `LogVerifier.feed` takes it. A NULL in a column (changed
    outside the gateway) reaches the checks that name it: a leaf as it is, a stored hash
    as one that does not match."""
    leaf, stored = row["leaf"], row["leaf_hash"]
    if isinstance(leaf, str):
        leaf = leaf.encode("utf-8")
    return row["idx"], leaf, b"" if stored is None else bytes(stored)


async def _verify_streamed(db: Database, trust: Trust, progress: Progress | None, deep: bool) -> Summary:
    async with db.transaction() as tx:
        notes = await tx.fetchall("SELECT size, note FROM audit_checkpoints ORDER BY size")
        lines = await log.cosignature_lines(tx)
    verifier = trust.verifier(
        [(r["size"], log.cosigned(r["note"], lines.get(r["size"]))) for r in notes], progress, deep
    )
    async for rows in stream_entries(db):
        verifier.feed(map(_stored_row, rows))
    # Read the state after the last entry: entries appended during the scan are
    # checked against a state at least as new, and found missing otherwise.
    async with db.transaction() as tx:
        state = await tx.fetchone("SELECT size, nodes FROM audit_tree WHERE id = 1")
        rest = await tx.fetchall(
            "SELECT idx, leaf, leaf_hash FROM audit_entries WHERE idx >= ? ORDER BY idx", (verifier.size,)
        )
    verifier.feed(map(_stored_row, rest))
    if state is None:
        return verifier.finish(require_signed=False)
    tree = log.tree_from_row(state)
    return verifier.finish(require_signed=False, state=(tree.size, tree.root()))
